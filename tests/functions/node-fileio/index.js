// File I/O at init, sync and async (libuv thread pool; io_uring is off for CRIU).
const fs = require('fs');
const path = require('path');

const SYNC = fs.readFileSync(path.join(__dirname, 'data.txt'), 'utf8');
// An init promise the handler awaits: settled before the checkpoint.
const ASYNC = fs.promises.readFile(path.join(__dirname, 'data.txt'), 'utf8')
  .then((text) => ({ text, at: Date.now() }));
// A file handle kept open across the checkpoint.
const HANDLE = fs.openSync(path.join(__dirname, 'data.txt'), 'r');

exports.handler = async () => {
  const later = await fs.promises.readFile(path.join(__dirname, 'data.txt'), 'utf8');
  const buf = Buffer.alloc(5);
  fs.readSync(HANDLE, buf, 0, 5, 0);
  return { sync: SYNC, async: (await ASYNC).text, async_at: (await ASYNC).at, later,
           handle: buf.toString() };
};
