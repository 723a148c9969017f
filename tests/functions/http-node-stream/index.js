// A streaming function URL handler (RESPONSE_STREAM): awslambda.HttpResponseStream.from
// writes the status/headers/cookies prelude, then the body goes out as it is written.
// ?gate=NAME: after the first line, wait (up to 20 s) for a file of that name in the
// code directory, which the caller creates once it holds that line: "gate-open" in
// the body proves the first bytes reached the client before the handler finished.
const fs = require('fs');
const path = require('path');

exports.handler = awslambda.streamifyResponse(async (event, responseStream) => {
  const stream = awslambda.HttpResponseStream.from(responseStream, {
    statusCode: 201,
    headers: { 'Content-Type': 'text/plain', 'X-Streamed': 'yes' },
    cookies: ['streamed=1; Path=/'],
  });
  stream.write(`first ${event.rawPath}\n`);
  const gate = (event.queryStringParameters || {}).gate;
  if (gate) {
    const file = path.join(process.env.LAMBDA_TASK_ROOT, path.basename(gate));
    const deadline = Date.now() + 20000;
    while (!fs.existsSync(file) && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    stream.write(fs.existsSync(file) ? 'gate-open\n' : 'gate-timeout\n');
  }
  stream.write('last\n');
  stream.end();
});
