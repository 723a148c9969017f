'use strict';
/**
 * snapstart-hooks: SnapStart runtime hooks for Node.js functions (the Node
 * counterpart of Python's snapshot_restore_py).
 *
 *   const { registerBeforeSnapshot, registerAfterRestore } = require('snapstart-hooks');
 *   registerBeforeSnapshot(async () => { await pool.end(); });   // LIFO, once, at publish
 *   registerAfterRestore(() => { pool = connect(); });          // FIFO, in every clone
 *
 * Hooks may be async (they are awaited, one at a time). Extra arguments are passed
 * to the hook. Resolvable through NODE_PATH, which snapstart sets for Node
 * functions; from an ES module use `createRequire(import.meta.url)('snapstart-hooks')`.
 *
 * When they run (bootstrap/node/snapstart-preload.js implements the phases):
 * - before-snapshot: once, when init is done (the handler module is loaded and
 *   in-flight file I/O has settled), before the runtime's first GET /next; a
 *   failure fails the publish with Runtime.BeforeSnapshotError (exit 64);
 * - after-restore: in every restored clone, when its first event has arrived and
 *   before the handler runs, after snapstart reseeded Math.random and crypto; a
 *   failure discards the clone with Runtime.AfterRestoreError (exit 65).
 * On cold (on-demand) starts neither phase exists and hooks never run.
 *
 * The registry lives on a global symbol, so every copy of this module in a
 * process shares it. Each entry keeps where it was registered (file, line), which
 * `snapstart snapshots inspect` shows.
 */

const KEY = Symbol.for('snapstart.hooks.v1');
const registry = globalThis[KEY] || (globalThis[KEY] = { beforeSnapshot: [], afterRestore: [] });

function check(fn, what) {
  if (typeof fn !== 'function') {
    throw new TypeError(`${what} expects a function, got ${typeof fn}`);
  }
}

/** Where the caller of ``register`` is: { file, line }, or undefined. */
function callerOf(register) {
  const prepare = Error.prepareStackTrace;
  const limit = Error.stackTraceLimit;
  try {
    Error.stackTraceLimit = 1;
    Error.prepareStackTrace = (_, frames) => frames;
    const holder = {};
    Error.captureStackTrace(holder, register);
    const frame = Array.isArray(holder.stack) ? holder.stack[0] : undefined;
    return frame ? { file: frame.getFileName() || '', line: frame.getLineNumber() || 0 } : undefined;
  } catch {
    return undefined;
  } finally {
    Error.prepareStackTrace = prepare;
    Error.stackTraceLimit = limit;
  }
}

function registerBeforeSnapshot(fn, ...args) {
  check(fn, 'registerBeforeSnapshot');
  registry.beforeSnapshot.push({ fn, args, site: callerOf(registerBeforeSnapshot) });
  return fn;
}

function registerAfterRestore(fn, ...args) {
  check(fn, 'registerAfterRestore');
  registry.afterRestore.push({ fn, args, site: callerOf(registerAfterRestore) });
  return fn;
}

module.exports = { registerBeforeSnapshot, registerAfterRestore };
