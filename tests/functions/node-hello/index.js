// A dependency-free Node.js function: proves init ran once and clones are unique.
const crypto = require('crypto');
const fs = require('fs');

const INIT_AT = Date.now();
const INIT_PID = process.pid;
const INIT_RANDOM = Math.random();      // drawn at init: must be the same in every clone
const captured = Math.random;           // a reference taken at init
// Fill Node's JS-level caches of OpenSSL output at init (128 UUIDs, 6 KiB for randomInt):
const INIT_UUID = crypto.randomUUID();
const INIT_INT = crypto.randomInt(2 ** 47);
let calls = 0;
console.log('node-hello: init ran');

exports.handler = async (event, context) => {
  calls += 1;
  console.log(`node-hello: handling ${JSON.stringify(event)}`);
  return {
    init_at: INIT_AT,
    init_pid: INIT_PID,
    init_random: INIT_RANDOM,
    init_uuid: INIT_UUID,
    init_int: INIT_INT,
    calls,
    event,
    request_id: context.awsRequestId,
    function_version: context.functionVersion,
    init_type: process.env.AWS_LAMBDA_INITIALIZATION_TYPE,
    execution_env: process.env.AWS_EXECUTION_ENV,
    io_uring: process.env.UV_USE_IO_URING,
    pid: process.pid,
    ppid: process.ppid,
    uid: process.getuid(),
    netns: fs.statSync('/proc/self/ns/net').ino,
    random_bytes: crypto.randomBytes(16).toString('hex'),
    random_uuid: crypto.randomUUID(),
    web_uuid: globalThis.crypto.randomUUID(),
    get_random_values: Buffer.from(crypto.getRandomValues(new Uint8Array(16))).toString('hex'),
    random_int: crypto.randomInt(2 ** 47),
    math_random: Math.random(),
    captured_random: captured(),
    ecdh: crypto.createECDH('prime256v1').generateKeys('hex'),
  };
};
