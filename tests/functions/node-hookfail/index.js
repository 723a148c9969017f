const { registerBeforeSnapshot, registerAfterRestore } = require('snapstart-hooks');

if (process.env.FAIL_PHASE === 'before') {
  registerBeforeSnapshot(() => { throw new Error('cannot snapshot'); });
} else {
  registerAfterRestore(async () => { throw new Error('cannot restore'); });
}

exports.handler = async () => ({ ok: true });
