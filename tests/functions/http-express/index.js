// An Express app through serverless-http (payload 2.0: function URLs and HttpApi).
// Its node_modules are installed by the test (npm ci), not kept in the repository.
const express = require('express');
const serverless = require('serverless-http');

const app = express();
app.use(express.raw({ type: 'application/octet-stream', limit: '8mb' }));

app.get('/users/:id', (req, res) => {
  res.cookie('user', req.params.id);
  res.json({ id: req.params.id, q: req.query.q || null, ua: req.get('user-agent') });
});

app.post('/echo', (req, res) => {
  res.type('application/octet-stream').send(Buffer.from(req.body).reverse());
});

app.use((req, res) => res.status(404).json({ missing: req.path }));

exports.handler = serverless(app, { binary: ['application/octet-stream'] });
