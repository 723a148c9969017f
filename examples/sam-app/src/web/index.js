// The sample app's Node function, behind its own function URL.
const startedAt = Date.now();

exports.handler = async (event) => ({
  statusCode: 200,
  headers: { 'content-type': 'text/plain' },
  body: `hello from node at ${event.rawPath} (init ${startedAt})`,
});
