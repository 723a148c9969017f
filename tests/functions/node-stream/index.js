// A streaming Node.js function (awslambda.streamifyResponse): writes, waits, writes.
// event.gate: after the first write, wait (up to 20 s) until a file of that name
// appears in the code directory: the caller creates it once it has the first bytes,
// so "gate-open" in the response proves they reached it before the handler finished.
// event.fail: throw after writing (Lambda's error trailers); event.mib: write that
// many MiB more (the 20 MiB limit).
const fs = require('fs');
const path = require('path');

console.log('node-stream: init ran');

exports.handler = awslambda.streamifyResponse(async (event, responseStream, context) => {
  responseStream.setContentType('text/plain');
  console.log(`node-stream: streaming ${context.awsRequestId}`);
  responseStream.write('first\n');
  if (event.gate) {
    const gate = path.join(process.env.LAMBDA_TASK_ROOT, event.gate);
    const deadline = Date.now() + 20000;
    while (!fs.existsSync(gate) && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    responseStream.write(fs.existsSync(gate) ? 'gate-open\n' : 'gate-timeout\n');
  }
  for (let i = 0; i < (event.mib || 0); i++) {
    responseStream.write(Buffer.alloc(1024 * 1024, 0x61));
  }
  if (event.fail) {
    throw new Error('broke mid-stream');
  }
  responseStream.write('second\n');
  responseStream.end();
});
