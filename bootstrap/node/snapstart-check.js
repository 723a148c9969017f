'use strict';
/**
 * `snapstart check`'s reporter for Node.js functions, inside the runtime. Loaded by
 * snapstart-preload.js only in check runs (SNAPSTART_CHECK_REPORTS is set): a
 * normal publish or clone never reads this file.
 *
 * `write(kind)` writes what the handler module holds, as {name path: short text}
 * of plain values, to /tmp/.snapstart-check/<kind>.json: "init" just before the
 * snapshot (after the before-snapshot hooks), "restored" in a restored clone after
 * the after-restore hooks. snapstart/manager/check.py compares them.
 *
 * What is walked, to a bounded depth (the same bounds as Python's reporter):
 * - the handler module's exports (found as aws-lambda-ric finds it: the handler
 *   string's file, extensionless, .js, .mjs, .cjs): `index.client.sessionId`;
 * - the bindings in the closure scopes of every function reached so far whose code
 *   is under LAMBDA_TASK_ROOT (node_modules included), read with the in-process
 *   inspector (`[[Scopes]]`): a module's top-level `const`/`let` that an exported
 *   function uses is reported even when it is not exported: `index.INSTANCE_ID`.
 *   V8 keeps only the bindings some function refers to; the others are gone once
 *   the module has run, so they cannot matter to an invocation either. Bindings of
 *   an inner scope (a factory's locals) are named after the function:
 *   `index.handler.(closure).id`.
 * A module is named by its path under LAMBDA_TASK_ROOT without the extension
 * (`index`, `lib/db`). Plain values: strings, numbers, bigints, Dates, Buffers and
 * typed arrays (hex); objects through their own enumerable data properties (no
 * getter is called, proxies are skipped), arrays, Maps. Sets, private class fields
 * (#x), functions' properties, and the scopes of code outside the task root (Node's
 * internals, snapstart's preload and its generators) are not reported.
 *
 * A module marks names as intentionally shared with an exported (or used)
 * `__snapstart_shared__ = ['NAME', ...]`.
 *
 * In Node 20 `inspector.Session#post` answers synchronously for an in-process
 * session; `call` checks that it did (and fails loudly otherwise).
 */

const fs = require('fs');
const path = require('path');
const util = require('util');
const { pathToFileURL, fileURLToPath } = require('url');

const DIR = '/tmp/.snapstart-check';
const MAX_DEPTH = 4;
const MAX_ITEMS = 32;
const MAX_LEAVES = 5000;
const MAX_FUNCTIONS = 256;
const MAX_TEXT = 200;
const SHARED = '__snapstart_shared__';
const WRAPPER = new Set(['exports', 'require', 'module', '__filename', '__dirname']);
const SLOT = Symbol.for('snapstart.check.slot');
const IDENT = /^[A-Za-z_$][\w$]*$/;

function taskRoot() {
  return path.resolve(process.env.LAMBDA_TASK_ROOT || process.cwd());
}

/** The handler module, found as aws-lambda-ric's UserFunction.load finds it. */
async function handlerModule(root, handler) {
  const base = path.basename(handler);
  const moduleRoot = handler.substring(0, handler.indexOf(base));
  const match = base.match(/^([^.]*)\.(.*)$/);
  if (!match) return null;
  const file = path.resolve(root, moduleRoot, match[1]);
  const cjs = (f) => {
    const key = fs.existsSync(f) && fs.realpathSync(f);
    const cached = key && require.cache[key];
    return cached ? { file: key, exports: cached.exports } : null;
  };
  const esm = async (f) => (fs.existsSync(f)
    ? { file: fs.realpathSync(f), exports: await import(pathToFileURL(f).href) } : null);
  // the ric required or imported it already: both return the cached instance
  return cjs(file) || cjs(`${file}.js`) || (await esm(`${file}.js`).catch(() => null))
    || (await esm(`${file}.mjs`)) || cjs(`${file}.cjs`);
}

function moduleName(root, file) {
  const rel = path.relative(root, file);
  return rel.slice(0, rel.length - path.extname(rel).length);
}

function hex(view) {
  return Buffer.from(view.buffer, view.byteOffset, view.byteLength).toString('hex');
}

/** A short text for a plain value; null if it is not one. */
function plain(value) {
  switch (typeof value) {
    case 'string': return JSON.stringify(value);
    case 'number': return String(value);
    case 'bigint': return `${value}n`;
    case 'object': break;
    default: return null;
  }
  if (value === null) return null;
  if (util.types.isDate(value)) {
    return `Date(${Number.isNaN(value.getTime()) ? 'Invalid' : value.toISOString()})`;
  }
  if (ArrayBuffer.isView(value)) return `${value.constructor.name}(${hex(value)})`;
  if (util.types.isAnyArrayBuffer(value)) return `ArrayBuffer(${hex(new Uint8Array(value))})`;
  return null;
}

function clip(text) {
  if (text.length <= MAX_TEXT) return text;
  // a long value is compared whole: a digest stands for the part not kept
  const digest = require('crypto').createHash('sha256').update(text).digest('hex');
  return `${text.slice(0, MAX_TEXT)}...#${digest.slice(0, 16)}`;
}

function key(base, name) {
  return IDENT.test(name) ? `${base}.${name}` : `${base}[${JSON.stringify(name)}]`;
}

class Walker {
  constructor(root) {
    this.root = root;
    this.out = {};
    this.leaves = 0;
    this.seen = new Set();
    this.functions = [];          // [fn, path] whose scopes are still to read
    this.modulesRead = new Set(); // scriptIds whose top-level scope was walked
    this.session = null;
    this.scripts = new Map();     // scriptId -> file
  }

  walk(value, where, depth) {
    if (this.leaves >= MAX_LEAVES || value === undefined || value === null) return;
    const text = plain(value);
    if (text !== null) {
      if (!(where in this.out)) {
        this.out[where] = clip(text);
        this.leaves += 1;
      }
      return;
    }
    if (typeof value === 'function') {
      if (this.functions.length < MAX_FUNCTIONS && !this.seen.has(value)) {
        this.seen.add(value);
        this.functions.push([value, where]);
      }
      return;
    }
    if (typeof value !== 'object' || depth >= MAX_DEPTH || this.seen.has(value)) return;
    if (value === globalThis || value === process || util.types.isProxy(value)) return;
    this.seen.add(value);
    if (Array.isArray(value)) {
      value.slice(0, MAX_ITEMS).forEach((item, i) => this.walk(item, `${where}[${i}]`, depth + 1));
    } else if (util.types.isMap(value)) {
      let n = 0;
      for (const [k, v] of value) {
        if (n++ >= MAX_ITEMS) break;
        if (typeof k === 'string' || typeof k === 'number') {
          this.walk(v, `${where}[${JSON.stringify(k)}]`, depth + 1);
        }
      }
    } else if (util.types.isSet(value) || util.types.isWeakMap(value)
               || util.types.isWeakSet(value) || util.types.isPromise(value)) {
      // unordered or opaque: nothing stable to compare
    } else {
      for (const name of Object.keys(value).slice(0, MAX_ITEMS)) {
        const desc = Object.getOwnPropertyDescriptor(value, name);
        if (desc && 'value' in desc && name !== SHARED) this.walk(desc.value, key(where, name), depth + 1);
      }
    }
  }

  /** A module's own names, minus the ones it marks as shared. */
  walkNames(names, prefix, shared, depth) {
    for (const [name, value] of names) {
      if (name !== SHARED && !shared.has(name)) this.walk(value, key(prefix, name), depth);
    }
  }

  // ---- closure scopes (inspector) ---------------------------------------------------
  call(method, params) {
    let done = false;
    let error = null;
    let result;
    this.session.post(method, params, (err, res) => {
      done = true;
      error = err;
      result = res;
    });
    if (!done) throw new Error(`snapstart check: inspector ${method} did not answer synchronously`);
    if (error) throw error;
    return result;
  }

  open() {
    const inspector = require('inspector');
    this.session = new inspector.Session();
    this.session.connect();
    // which file each script is: Debugger.enable reports every parsed script
    this.session.on('Debugger.scriptParsed', ({ params }) => {
      const url = params.url || '';
      this.scripts.set(params.scriptId, url.startsWith('file:') ? fileURLToPath(url) : url);
    });
    this.call('Debugger.enable', {});
    this.call('Debugger.disable', {});
  }

  close() {
    if (this.session) {
      try {
        this.call('Runtime.releaseObjectGroup', { objectGroup: 'snapstart-check' });
      } finally {
        this.session.disconnect();
        this.session = null;
      }
    }
  }

  remote(value) {
    globalThis[SLOT] = value;
    try {
      return this.call('Runtime.evaluate', { expression: 'globalThis[Symbol.for("snapstart.check.slot")]',
                                             objectGroup: 'snapstart-check' }).result;
    } finally {
      delete globalThis[SLOT];
    }
  }

  local(remote) {
    if (!remote) return undefined;
    if (remote.objectId) {
      let value;
      globalThis[SLOT] = (v) => { value = v; };
      try {
        this.call('Runtime.callFunctionOn', {
          objectId: remote.objectId,
          functionDeclaration: 'function () { globalThis[Symbol.for("snapstart.check.slot")](this); }',
        });
      } finally {
        delete globalThis[SLOT];
      }
      return value;
    }
    if (remote.type === 'bigint') return BigInt(String(remote.unserializableValue).replace(/n$/, ''));
    if (remote.unserializableValue !== undefined) return Number(remote.unserializableValue);
    return remote.value;
  }

  properties(objectId) {
    return this.call('Runtime.getProperties', { objectId, ownProperties: true });
  }

  /** Walk the scopes of the functions found so far (and of those found meanwhile). */
  walkScopes(sharedOf) {
    for (let i = 0; i < this.functions.length && this.leaves < MAX_LEAVES; i++) {
      const [fn, where] = this.functions[i];
      try {
        this.walkScopesOf(fn, where, sharedOf);
      } catch {
        // a function the inspector cannot describe: its scopes are not reported
      }
    }
  }

  walkScopesOf(fn, where, sharedOf) {
    const internal = this.properties(this.remote(fn).objectId).internalProperties || [];
    const location = internal.find((p) => p.name === '[[FunctionLocation]]');
    const scopes = internal.find((p) => p.name === '[[Scopes]]');
    const scriptId = location && location.value && location.value.value
      && location.value.value.scriptId;
    const file = this.scripts.get(scriptId) || '';
    if (!scopes || !file.startsWith(`${this.root}/`)) return;
    const module = moduleName(this.root, file);
    const list = this.properties(scopes.value.objectId).result
      .filter((p) => /^\d+$/.test(p.name))
      .map((p) => p.value)
      .filter((s) => !['Global', 'Script', 'With', 'Eval'].includes(s.description));
    // outermost first: the module's top level, then inner scopes
    list.reverse().forEach((scope, level) => {
      if (level === 0) {
        if (this.modulesRead.has(scriptId)) return;
        this.modulesRead.add(scriptId);
      }
      const names = this.properties(scope.objectId).result
        .filter((p) => !(level === 0 && WRAPPER.has(p.name)))
        .map((p) => [p.name, p.value]);
      const own = names.find(([name]) => name === SHARED);
      const shared = new Set([...sharedOf(file), ...sharedList(own && this.local(own[1]))]);
      const prefix = level === 0 ? module : `${where}.(closure)`;
      for (const [name, remote] of names) {
        if (name === SHARED || shared.has(name)) continue;
        this.walk(this.local(remote), key(prefix, name), 0);
      }
    });
  }
}

function sharedList(value) {
  return Array.isArray(value) ? value.filter((n) => typeof n === 'string') : [];
}

/** {name path: text} of what the handler module holds now. */
async function snapshotOfModule() {
  const root = taskRoot();
  const walker = new Walker(root);
  const handler = process.env._HANDLER || process.argv[2] || '';
  const found = await handlerModule(root, handler);
  if (!found) throw new Error(`snapstart check: cannot find the module of handler ${handler}`);
  const sharedOf = (file) => {
    if (file === found.file) return sharedList(found.exports[SHARED]);
    const cached = require.cache[file];
    return sharedList(cached && cached.exports && cached.exports[SHARED]);
  };
  const exportsObj = found.exports;
  const names = Object.keys(exportsObj).map((name) => {
    const desc = Object.getOwnPropertyDescriptor(exportsObj, name);
    return [name, desc && 'value' in desc ? desc.value : undefined];
  });
  walker.walkNames(names, moduleName(root, found.file), new Set(sharedOf(found.file)), 0);
  try {
    walker.open();
    walker.walkScopes(sharedOf);
  } finally {
    walker.close();
  }
  return walker.out;
}

async function write(kind) {
  const out = await snapshotOfModule();
  fs.mkdirSync(DIR, { recursive: true });
  const tmp = path.join(DIR, `.${kind}.json.tmp`);
  fs.writeFileSync(tmp, JSON.stringify(out));
  fs.renameSync(tmp, path.join(DIR, `${kind}.json`));
}

module.exports = { write, snapshotOfModule };
