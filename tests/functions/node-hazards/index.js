// Values a Node.js function derives from randomness or the clock at init (issue 17):
// `snapstart check` must name each hazard by its path, and nothing else.
const crypto = require('crypto');
const { registerAfterRestore } = require('snapstart-hooks');

const INSTANCE_ID = crypto.randomUUID();        // hazard, not exported: found in a scope
const STARTED_AT = new Date();                   // hazard: the clock at init
const TABLE = { regions: ['eu-west-1', 'us-east-1'], retries: 3 };     // deterministic
let requestSeed = crypto.randomBytes(8);         // regenerated after every restore: clean
const WARMUP_KEY = crypto.randomUUID();          // marked as shared on purpose: clean

registerAfterRestore(function renewSeed() { requestSeed = crypto.randomBytes(8); });

class Client {
  constructor() {
    this.endpoint = 'https://example.invalid';  // deterministic
    this.sessionId = crypto.randomBytes(16).toString('hex');             // hazard
  }
}

exports.client = new Client();
exports.__snapstart_shared__ = ['WARMUP_KEY'];

exports.handler = async () => {
  // never runs in a check: the check answers its events itself
  throw new Error('node-hazards: the handler ran');
  // eslint-disable-next-line no-unreachable
  return { INSTANCE_ID, STARTED_AT, TABLE, requestSeed, WARMUP_KEY };
};
