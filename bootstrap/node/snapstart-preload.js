'use strict';
/**
 * snapstart's preload for Node.js runtimes in snap-start mode
 * (NODE_OPTIONS=--require <this file>; see snapstart/runtimes/node.py).
 *
 * aws-lambda-ric 3.x knows nothing about SnapStart: it never calls
 * GET /runtime/restore/next. snapstart therefore checkpoints a Node sandbox while its
 * runtime is parked in its *first* GET /runtime/invocation/next, and this preload
 * gives that rule its phases by wrapping `next()` of the ric's native client
 * (rapid-client.node, caught as it is loaded):
 *
 *   first next() call    init is done: wait for in-flight file/DNS requests
 *                        started at init to settle, run before-snapshot hooks
 *                        (LIFO), then really ask for work -> the agent reports
 *                        "ready" and the tree is dumped while this call is parked.
 *   first next() return  by construction only in a restored clone (the publish
 *                        sandbox is killed after the dump, it never gets an event):
 *                        reseed (below), run after-restore hooks (FIFO), then hand
 *                        the event to the handler.
 *   later next() calls   untouched.
 *
 * After the before-snapshot hooks the registered hooks are listed, in the order they
 * run, in /tmp/.snapstart-hooks.json (HOOKS_FILE), which the publisher takes out of
 * the sandbox before the dump (snapstart/manager/publisher.py) for `snapshots
 * inspect`. In `snapstart check` runs (SNAPSTART_CHECK_REPORTS set) the reporter
 * snapstart-check.js is loaded (only then) and writes what the handler module holds
 * after the before-snapshot hooks and, in a restored clone, after the after-restore
 * hooks; that clone's first event is answered with a SnapStart.CheckRun function
 * error and the handler never runs (snapstart/manager/check.py sends that event).
 *
 * Uniqueness across clones. The manager reseeds the kernel CRNG before every
 * restore; what lives in process memory is copied into every clone, so:
 * - OpenSSL: its DRBG is bypassed altogether. Node starts with an OpenSSL config
 *   (--openssl-config) that makes bootstrap/node/snapstart-rand-engine.c the
 *   default RAND method: every RAND_bytes (crypto.randomBytes, randomFill*,
 *   getRandomValues, key generation, TLS) is a getrandom(2) call. Nothing to reseed.
 * - Math.random (V8 keeps its xorshift state and a cache per context) and
 *   crypto.randomUUID (Node batches 128 UUIDs) are replaced, before any user code
 *   runs, by generators drawing from pools filled by the engine; the pools are
 *   dropped after restore. References taken at init hold these generators, so they
 *   are covered too. crypto.randomInt's 6 KiB batch is run past a refill on its
 *   first use after a restore if it was used before the snapshot.
 * Not covered (documented in README): values a function derived from randomness
 * during init (keys, ids, seeds of its own PRNGs, pools such as nanoid's), V8's
 * string-hash seed, Node internals that use V8's primordial Math.random or Node's
 * internal UUID batch (blob: URL ids), worker threads and child processes alive at
 * snapshot time (only the main thread sees the restore), and --enable-fips (the
 * FIPS provider keeps its own DRBG).
 *
 * Failures: a before-snapshot hook that throws posts /runtime/init/error
 * (Runtime.BeforeSnapshotError) and exits 64; an after-restore hook that throws
 * posts /runtime/restore/error (Runtime.AfterRestoreError) and exits 65, as
 * awslambdaric does for Python.
 *
 * On cold (on-demand) starts this file is not loaded. Keep it small and lazy: it
 * runs at the start of every snap-start runtime.
 */

if (process.env.AWS_LAMBDA_INITIALIZATION_TYPE === 'snap-start') {
  install();
}

function install() {
  const Module = require('module');
  const path = require('path');
  const crypto = require('crypto');

  const HOOKS = Symbol.for('snapstart.hooks.v1');
  const HOOKS_FILE = '/tmp/.snapstart-hooks.json';
  const registry = globalThis[HOOKS]
    || (globalThis[HOOKS] = { beforeSnapshot: [], afterRestore: [] });
  const randomFillSync = crypto.randomFillSync;

  // The alternative (pure-JS) client bypasses the native next() wrapped below.
  delete process.env.AWS_LAMBDA_NODEJS_USE_ALTERNATIVE_CLIENT_1;

  // Everything below keeps random bytes in JS memory, which a snapshot copies: each
  // pool is dropped by reseed() after a restore (O(1): it refills on next use).
  // ---- Math.random ---------------------------------------------------------------
  const pool = new Uint32Array(1024);
  let at = pool.length;
  function random() {
    if (at > pool.length - 2) {
      randomFillSync(pool);
      at = 0;
    }
    // 53 random bits -> [0, 1), as genrand_res53 does
    const hi = pool[at++] >>> 5;
    const lo = pool[at++] >>> 6;
    return (hi * 67108864 + lo) / 9007199254740992;
  }
  define(Math, 'random', random);

  // ---- crypto.randomUUID ---------------------------------------------------------
  // Node batches 128 UUIDs of OpenSSL output in a private buffer; ours replaces it
  // for crypto.randomUUID and globalThis.crypto.randomUUID (same v4 format).
  const nodeUUID = crypto.randomUUID;
  const HEX = Array.from({ length: 256 }, (_, i) => (i + 0x100).toString(16).slice(1));
  const uuids = new Uint8Array(16 * 128);
  let uuidAt = uuids.length;
  function uuidV4(options) {
    if (options !== undefined && (options === null || typeof options !== 'object'
        || (options.disableEntropyCache !== undefined
            && typeof options.disableEntropyCache !== 'boolean'))) {
      return nodeUUID(options); // throws Node's own validation error
    }
    let b = uuids;
    let o = uuidAt;
    if (options && options.disableEntropyCache) {
      b = randomFillSync(new Uint8Array(16));
      o = 0;
    } else {
      if (o === uuids.length) {
        randomFillSync(uuids);
        o = 0;
      }
      uuidAt = o + 16;
    }
    b[o + 6] = (b[o + 6] & 0x0f) | 0x40;
    b[o + 8] = (b[o + 8] & 0x3f) | 0x80;
    return HEX[b[o]] + HEX[b[o + 1]] + HEX[b[o + 2]] + HEX[b[o + 3]] + '-'
      + HEX[b[o + 4]] + HEX[b[o + 5]] + '-' + HEX[b[o + 6]] + HEX[b[o + 7]] + '-'
      + HEX[b[o + 8]] + HEX[b[o + 9]] + '-' + HEX[b[o + 10]] + HEX[b[o + 11]]
      + HEX[b[o + 12]] + HEX[b[o + 13]] + HEX[b[o + 14]] + HEX[b[o + 15]];
  }
  Object.defineProperty(uuidV4, 'name', { value: 'randomUUID' });
  define(crypto, 'randomUUID', uuidV4, true);
  const Crypto = Object.getPrototypeOf(globalThis.crypto);
  const webUUID = Crypto.randomUUID;
  define(Crypto, 'randomUUID', function randomUUID() {
    return this === globalThis.crypto ? uuidV4() : webUUID.call(this); // Node's brand check
  }, true);

  // ---- crypto.randomInt ----------------------------------------------------------
  // Node keeps 6 KiB of OpenSSL output for it. If it was used before the snapshot,
  // the first call after a restore first runs it past one refill (at most 1025
  // draws of 6 bytes), paid once and only by functions that use it.
  const nodeRandomInt = crypto.randomInt;
  let intUsed = false;
  let intStale = false;
  define(crypto, 'randomInt', function randomInt(...args) {
    if (intStale) {
      intStale = false;
      for (let i = 0; i < 1025; i++) nodeRandomInt(0xffffffffffff);
    }
    intUsed = true;
    return nodeRandomInt(...args);
  }, true);

  function reseed() {
    at = pool.length;
    uuidAt = uuids.length;
    intStale = intUsed;
  }

  function define(obj, name, value, enumerable) {
    const desc = Object.getOwnPropertyDescriptor(obj, name) || {};
    Object.defineProperty(obj, name, { value, writable: true, configurable: true,
                                       enumerable: enumerable ?? !!desc.enumerable });
  }

  // ---- phases ----------------------------------------------------------------------
  const PENDING = /Req/; // FSReqCallback, FSReqPromise, CloseReq, GetAddrInfoReqWrap, ...

  async function settleInit(limitMs) {
    const deadline = Date.now() + limitMs;
    for (;;) {
      await new Promise((resolve) => setImmediate(resolve));
      const busy = process.getActiveResourcesInfo().some((name) => PENDING.test(name));
      if (!busy || Date.now() > deadline) return;
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
  }

  async function runHooks(list) {
    for (const { fn, args } of list) await fn(...args);
  }

  function fail(route, errorType, err, code) {
    const error = err instanceof Error ? err : new Error(String(err));
    const body = JSON.stringify({
      errorMessage: String(error.message),
      errorType: error.name || 'Error',
      stackTrace: String(error.stack || '').split('\n').slice(1).map((l) => l.trim()),
    });
    console.error(`snapstart: ${errorType}: ${error.stack || error}`);
    const [host, port] = String(process.env.AWS_LAMBDA_RUNTIME_API).split(':');
    const http = require('http');
    const req = http.request({
      host, port, method: 'POST', agent: false, path: `/2018-06-01/runtime/${route}`,
      headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body),
                 'Lambda-Runtime-Function-Error-Type': errorType },
    }, (res) => { res.resume(); res.on('end', () => process.exit(code)); });
    req.on('error', () => process.exit(code));
    req.end(body);
    return new Promise(() => {}); // the runtime goes no further
  }

  function wrapNext(native) {
    if (!native || typeof native.next !== 'function') {
      throw new Error('snapstart: unsupported aws-lambda-ric (its native client has no next())');
    }
    const next = native.next;
    let first = true;
    native.next = async function snapstartNext(...args) {
      if (!first) return next.apply(this, args);
      first = false;
      await settleInit(10000);
      const check = process.env.SNAPSTART_CHECK_REPORTS
        ? require(path.join(__dirname, 'snapstart-check.js')) : null;
      try {
        await runHooks(registry.beforeSnapshot.slice().reverse());
        recordHooks();
        if (check) await check.write('init');
      } catch (err) {
        return fail('init/error', 'Runtime.BeforeSnapshotError', err, 64);
      }
      let event = await next.apply(this, args); // <- the checkpoint is taken in here
      try {
        reseed();
        await runHooks(registry.afterRestore.slice());
        if (check) await check.write('restored');
      } catch (err) {
        return fail('restore/error', 'Runtime.AfterRestoreError', err, 65);
      }
      if (check) {
        // a check's event is not the function's: answer it ourselves, wait for work
        const id = String(event.headers['lambda-runtime-aws-request-id']);
        native.error(encodeURIComponent(id), JSON.stringify({
          errorMessage: 'snapstart check: reports written; the handler was not run',
          errorType: 'SnapStart.CheckRun', stackTrace: [],
        }), '');
        event = await next.apply(this, args);
      }
      return event;
    };
  }

  // ---- the registered hooks, for `snapshots inspect` -------------------------------
  function recordHooks() {
    const root = path.resolve(process.env.LAMBDA_TASK_ROOT || process.cwd());
    const row = (kind) => ({ fn, site }) => {
      let file = (site && site.file) || '';
      if (file.startsWith('file:')) file = require('url').fileURLToPath(file);
      const inside = file.startsWith(`${root}/`);
      const rel = inside ? path.relative(root, file) : file;
      const module = inside ? rel.slice(0, rel.length - path.extname(rel).length)
        : path.basename(file, path.extname(file));
      return { kind, name: `${module || '?'}.${fn.name || '<anonymous>'}`,
               at: site ? `${rel}:${site.line}` : '' };
    };
    const hooks = [...registry.beforeSnapshot.slice().reverse().map(row('before_snapshot')),
                   ...registry.afterRestore.map(row('after_restore'))];
    try {
      require('fs').writeFileSync(HOOKS_FILE, JSON.stringify({ hooks }));
    } catch (err) {
      // not worth failing a publish for: inspect then shows them as not recorded
      console.error(`snapstart: cannot record the registered hooks: ${err.message}`);
    }
  }

  const loadNative = Module._extensions['.node'];
  Module._extensions['.node'] = function snapstartLoadNative(module, filename, ...rest) {
    const out = loadNative.call(this, module, filename, ...rest);
    if (path.basename(filename) === 'rapid-client.node') wrapNext(module.exports);
    return out;
  };
}
