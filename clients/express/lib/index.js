'use strict';

const { AsyncLocalStorage } = require('node:async_hooks');
const { Store } = require('express-session');
const { nextStamp, stampString, STAMP_SPACING } = require('./stamp');

const DEFAULT_TTL = 86400;
const MAX_TTL = 315360000; // the server's limit on X-TTL and X-Max-Lifetime: ten years
const DEFAULT_TIMEOUT_MS = 10000;
const DEFAULT_MAX_TRACKED = 10000;
const LIST_PAGE = 1000;
const MAX_LIST_PAGES = 100000;
const PARALLEL = 8;
const PROBLEM_PREFIX = 'urn:tidemark:problem:';

// The request's writes so far, per key, for stamps of repeated writes within one request.
const WRITES = Symbol('tidemark.writes');

// The request being served, so that get() (called by express-session without the request)
// can remember what it loaded on that request, and destroy() (likewise) can use its stamp.
const requests = new AsyncLocalStorage();

/**
 * Express middleware: records when the request began (`req._tidemarkStamp`, BigInt µs since
 * the Unix epoch) and makes the request known to TidemarkStore for the rest of its handling.
 * Mount it before `session()`.
 */
function tidemarkStamp() {
  return function tidemarkStampMiddleware(req, res, next) {
    if (req._tidemarkStamp === undefined) req._tidemarkStamp = nextStamp();
    requests.run(req, next);
  };
}

class TidemarkError extends Error {
  constructor(message, { status, problem, code = 'ETIDEMARK', cause } = {}) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'TidemarkError';
    this.code = code;
    if (status !== undefined) this.status = status;
    if (problem !== undefined) this.problem = problem;
  }
}

class TidemarkStore extends Store {
  /**
   * @param {object} options
   * @param {string} options.url base URL of tidemark's HTTP API, e.g. http://127.0.0.1:8080
   * @param {string} [options.token] bearer token (sent as `Authorization: Bearer …`)
   * @param {string} [options.prefix='sess:'] key prefix
   * @param {number|function} [options.ttl] seconds, or session => seconds; default: the
   *   cookie's remaining maxAge, else 86400
   * @param {function} [options.ownerOf] session => owner id (e.g. the user id) or undefined
   * @param {number} [options.maxLifetime] seconds; sent as X-Max-Lifetime on every write
   * @param {function} [options.fetch] fetch implementation (default: the global fetch)
   * @param {number} [options.timeout=10000] ms per request to tidemark; 0 for none
   * @param {number} [options.maxTracked=10000] sessions whose loaded fields are remembered
   *   store-wide when a request is not known (no tidemarkStamp() middleware)
   */
  constructor(options = {}) {
    super();
    const { url, token, prefix = 'sess:', ttl, ownerOf, maxLifetime } = options;
    if (typeof url !== 'string' || url === '') {
      throw new TypeError('TidemarkStore: options.url (tidemark\'s base URL) is required');
    }
    if (ttl !== undefined && typeof ttl !== 'function' && !(Number.isFinite(ttl) && ttl > 0)) {
      throw new TypeError('TidemarkStore: options.ttl must be a positive number of seconds or a function');
    }
    if (ownerOf !== undefined && typeof ownerOf !== 'function') {
      throw new TypeError('TidemarkStore: options.ownerOf must be a function');
    }
    if (maxLifetime !== undefined && !(Number.isFinite(maxLifetime) && maxLifetime > 0)) {
      throw new TypeError('TidemarkStore: options.maxLifetime must be a positive number of seconds');
    }
    const fetchImpl = options.fetch || globalThis.fetch;
    if (typeof fetchImpl !== 'function') {
      throw new TypeError('TidemarkStore: no fetch available (Node >= 20 has a global fetch)');
    }
    this.url = url.replace(/\/+$/, '');
    this.token = token;
    this.prefix = String(prefix);
    this.ttl = ttl;
    this.ownerOf = ownerOf;
    this.maxLifetime = maxLifetime;
    this.fetch = fetchImpl;
    this.timeout = options.timeout === undefined ? DEFAULT_TIMEOUT_MS : options.timeout;
    this.maxTracked = options.maxTracked === undefined ? DEFAULT_MAX_TRACKED : options.maxTracked;
    // What get() loaded, { fields: Map(name -> JSON text), owner }, per session ID: on the
    // request that loaded it (request -> Map), else store-wide (bounded by maxTracked).
    this._byRequest = new WeakMap();
    this._loaded = new Map();
  }

  // ---- express-session's interface -------------------------------------------------------

  get(sid, callback) {
    return settle(this._get(sid), callback);
  }

  set(sid, session, callback) {
    return settle(this._set(sid, session), callback);
  }

  destroy(sid, callback) {
    return settle(this._destroy(sid), callback);
  }

  touch(sid, session, callback) {
    return settle(this._touch(sid, session), callback);
  }

  all(callback) {
    return settle(this._all(), callback);
  }

  length(callback) {
    return settle(this._listKeys().then((keys) => keys.length), callback);
  }

  clear(callback) {
    return settle(this._clear(), callback);
  }

  /**
   * Ends every session of `owner` (as recorded from ownerOf), except the session `keep`
   * (a session ID, e.g. req.sessionID) when given. Resolves `{ revoked, kept }`: the number
   * deleted, and the sessions left ({ key, sid, timestamp }: the kept one, and any written
   * after the revocation's timestamp).
   */
  async revokeOwner(owner, { keep } = {}) {
    const id = normalizeOwner(owner);
    if (id === undefined) throw new TypeError('revokeOwner: an owner id is required');
    if (keep !== undefined && keep !== null && typeof keep !== 'string') {
      throw new TypeError('revokeOwner: keep must be one session ID (a string)');
    }
    const query = keep ? `?keep=${encodeURIComponent(this._key(keep))}` : '';
    const path = `/owners/${encodeURIComponent(id)}/sessions${query}`;
    const r = await this._request('DELETE', path, {
      'x-write-timestamp': stampString(nextStamp()),
    });
    if (r.status !== 200) throw this._statusError('DELETE', path, r);
    const body = parseJson(r.text, 'DELETE', path);
    const kept = (Array.isArray(body.kept) ? body.kept : []).map((k) => {
      const key = safeDecode(String(k.key));
      const sid = key.startsWith(this.prefix) ? key.slice(this.prefix.length) : undefined;
      return { key, sid, timestamp: k.timestamp };
    });
    return { revoked: body.revoked, kept };
  }

  // ---- the work --------------------------------------------------------------------------

  async _get(sid) {
    const path = this._path(sid);
    const r = await this._request('GET', path);
    if (r.status === 404) {
      this._forget(sid, currentRequest());
      return null;
    }
    if (r.status !== 200) throw this._statusError('GET', path, r);
    const data = parseJson(r.text, 'GET', path);
    if (!isObject(data)) {
      throw new TidemarkError(`tidemark: the value at ${path} is not a JSON object`);
    }
    this._remember(sid, currentRequest(), {
      fields: fieldsOf(data),
      owner: r.headers.get('x-session-owner') ?? undefined,
    });
    return data;
  }

  async _set(sid, session) {
    const req = requestOf(session);
    const plain = plainSession(session);
    const loaded = this._recall(sid, req);
    const patch = loaded ? diffFields(loaded.fields, plain) : plain;
    if (Object.keys(patch).length === 0) return this._touch(sid, session);

    const path = this._path(sid);
    const owner = this._owner(session);
    const headers = {
      'content-type': 'application/merge-patch+json',
      'x-write-timestamp': stampString(this._stampFor(req, sid)),
      'x-ttl': String(this._ttlOf(session)),
    };
    // Login sets the owner; a session that no longer has one (ownerOf gives undefined where
    // an owner was loaded) clears it with an empty header.
    const loadedOwner = loaded ? loaded.owner : undefined;
    const sendOwner = this.ownerOf !== undefined && owner !== loadedOwner;
    if (sendOwner) headers['x-session-owner'] = owner === undefined ? '' : owner;
    if (this.maxLifetime !== undefined) headers['x-max-lifetime'] = String(Math.min(MAX_TTL, Math.ceil(this.maxLifetime)));

    const r = await this._request('PATCH', path, headers, JSON.stringify(patch));
    if (r.status === 409) {
      // Every field was refused: newer writes of this session exist (or it was deleted by
      // a later request, e.g. a logout). The newer data wins; that is not an error.
      this.emit('refused', { sid, fields: Object.keys(patch) });
      return;
    }
    if (r.status !== 200 && r.status !== 201) throw this._statusError('PATCH', path, r);

    // Remember what is now stored, so a second save in this request sends only new changes.
    let refused = [];
    try {
      const answer = JSON.parse(r.text);
      if (answer && Array.isArray(answer.refused)) refused = answer.refused.map((f) => f && f.field);
    } catch (_) {
      // An answer without a readable body: assume every field was applied.
    }
    if (refused.length) this.emit('refused', { sid, fields: refused });
    const fields = new Map(loaded ? loaded.fields : []);
    for (const [name, value] of Object.entries(patch)) {
      if (refused.includes(name)) continue;
      if (value === null) fields.delete(name);
      else fields.set(name, JSON.stringify(value));
    }
    this._remember(sid, req, { fields, owner: sendOwner ? owner : loadedOwner });
  }

  async _destroy(sid) {
    const req = currentRequest();
    const path = this._path(sid);
    const r = await this._request('DELETE', path, {
      'x-write-timestamp': stampString(this._stampFor(req, sid)),
    });
    this._forget(sid, req);
    // 409: a newer write exists (a later request of this session); it stays.
    if (r.status === 204 || r.status === 200 || r.status === 404 || r.status === 409) return;
    throw this._statusError('DELETE', path, r);
  }

  async _touch(sid, session) {
    const path = `${this._path(sid)}/touch`;
    const r = await this._request('POST', path, { 'x-ttl': String(this._ttlOf(session)) });
    if (r.status === 200 || r.status === 204 || r.status === 404) return;
    throw this._statusError('POST', path, r);
  }

  async _all() {
    const keys = await this._listKeys();
    const sessions = {};
    await eachLimited(keys, PARALLEL, async (key) => {
      const path = `/keys/${encodeURIComponent(key)}`;
      const r = await this._request('GET', path);
      if (r.status === 404) return;
      if (r.status !== 200) throw this._statusError('GET', path, r);
      let data;
      try {
        data = JSON.parse(r.text);
      } catch (_) {
        return; // not a session written by this store
      }
      if (isObject(data)) sessions[key.slice(this.prefix.length)] = data;
    });
    return sessions;
  }

  async _clear() {
    const keys = await this._listKeys();
    const stamp = stampString(nextStamp());
    await eachLimited(keys, PARALLEL, async (key) => {
      const path = `/keys/${encodeURIComponent(key)}`;
      const r = await this._request('DELETE', path, { 'x-write-timestamp': stamp });
      if (r.status === 204 || r.status === 200 || r.status === 404 || r.status === 409) return;
      throw this._statusError('DELETE', path, r);
    });
    this._loaded.clear();
  }

  /** Every key under the prefix (decoded), paging through GET /keys?prefix=. */
  async _listKeys() {
    const keys = [];
    const seen = new Set();
    let cursor = null;
    for (let page = 0; page < MAX_LIST_PAGES; page++) {
      let path = `/keys?prefix=${encodeURIComponent(this.prefix)}&limit=${LIST_PAGE}`;
      if (cursor !== null) path += `&cursor=${encodeURIComponent(cursor)}`;
      const r = await this._request('GET', path);
      if (r.status !== 200) throw this._statusError('GET', path, r);
      const body = parseJson(r.text, 'GET', path);
      for (const k of body.keys || []) {
        const key = safeDecode(k);
        if (key.startsWith(this.prefix)) keys.push(key);
      }
      cursor = body.next_cursor ?? null;
      if (cursor === null) return keys;
      if (seen.has(cursor)) throw new TidemarkError(`tidemark: GET /keys repeated the cursor ${cursor}`);
      seen.add(cursor);
    }
    throw new TidemarkError(`tidemark: GET /keys did not end within ${MAX_LIST_PAGES} pages`);
  }

  // ---- helpers ---------------------------------------------------------------------------

  _key(sid) {
    return this.prefix + sid;
  }

  _path(sid) {
    return `/keys/${encodeURIComponent(this._key(sid))}`;
  }

  _ttlOf(session) {
    let ttl;
    if (typeof this.ttl === 'function') ttl = this.ttl(session);
    else if (this.ttl !== undefined) ttl = this.ttl;
    else {
      const maxAge = session && session.cookie && session.cookie.maxAge;
      ttl = typeof maxAge === 'number' && Number.isFinite(maxAge) ? maxAge / 1000 : DEFAULT_TTL;
    }
    return Math.min(MAX_TTL, Math.max(1, Math.ceil(Number(ttl) || DEFAULT_TTL)));
  }

  _owner(session) {
    if (!this.ownerOf) return undefined;
    return normalizeOwner(this.ownerOf(session));
  }

  /** The stamp of a write to `sid` by `req`: the request's start, + n for its n-th earlier write. */
  _stampFor(req, sid) {
    const start = req && req._tidemarkStamp;
    if (start === undefined || start === null) return nextStamp();
    const key = this._key(sid);
    let writes = req[WRITES];
    if (!writes) {
      writes = new Map();
      Object.defineProperty(req, WRITES, { value: writes });
    }
    const n = writes.get(key) || 0;
    writes.set(key, n + 1);
    const bump = BigInt(Math.min(n, Number(STAMP_SPACING) - 1));
    return BigInt(start) + bump;
  }

  _remember(sid, req, snapshot) {
    if (req && typeof req === 'object') {
      let map = this._byRequest.get(req);
      if (!map) {
        map = new Map();
        this._byRequest.set(req, map);
      }
      map.set(sid, snapshot);
      this._loaded.delete(sid);
      return;
    }
    this._loaded.delete(sid);
    this._loaded.set(sid, snapshot);
    while (this._loaded.size > this.maxTracked) {
      this._loaded.delete(this._loaded.keys().next().value);
    }
  }

  _recall(sid, req) {
    const map = req && this._byRequest.get(req);
    if (map && map.has(sid)) return map.get(sid);
    return this._loaded.get(sid);
  }

  _forget(sid, req) {
    const map = req && this._byRequest.get(req);
    if (map) map.delete(sid);
    this._loaded.delete(sid);
  }

  async _request(method, path, headers = {}, body) {
    const all = { ...headers };
    if (this.token) all.authorization = `Bearer ${this.token}`;
    const init = { method, headers: all };
    if (body !== undefined) init.body = body;
    if (this.timeout) init.signal = AbortSignal.timeout(this.timeout);
    try {
      const res = await this.fetch(this.url + path, init);
      const text = await res.text();
      return { status: res.status, headers: res.headers, text };
    } catch (err) {
      const why = describeFailure(err);
      throw new TidemarkError(`tidemark: ${method} ${path} failed: cannot reach ${this.url} (${why})`, {
        code: 'ETIDEMARK_UNREACHABLE',
        cause: err,
      });
    }
  }

  _statusError(method, path, r) {
    let problem;
    let name = '';
    let detail = '';
    try {
      problem = JSON.parse(r.text);
      if (problem && typeof problem.type === 'string') {
        name = problem.type.startsWith(PROBLEM_PREFIX) ? problem.type.slice(PROBLEM_PREFIX.length) : problem.type;
      }
      detail = (problem && (problem.detail || problem.title)) || '';
    } catch (_) {
      detail = r.text.slice(0, 200);
    }
    let message = `tidemark: ${method} ${path} answered ${r.status}`;
    if (name) message += ` ${name}`;
    if (detail) message += `: ${detail}`;
    if (r.status === 401) message += ' (check the store\'s token)';
    return new TidemarkError(message, { status: r.status, problem: name || undefined });
  }
}

// ---- module helpers ------------------------------------------------------------------------

/** Calls back (outside the promise chain) when given a callback; else returns the promise. */
function settle(promise, callback) {
  if (typeof callback !== 'function') return promise;
  promise.then(
    (value) => process.nextTick(callback, null, value),
    (err) => process.nextTick(callback, err),
  );
  return undefined;
}

function currentRequest() {
  return requests.getStore();
}

/** The request a Session object belongs to (express-session gives it a hidden `req`). */
function requestOf(session) {
  const own = session && session.req;
  if (own && own._tidemarkStamp !== undefined) return own;
  return currentRequest() || own;
}

/** The session as JSON data, without members whose value is null (null removes a field). */
function plainSession(session) {
  const plain = JSON.parse(JSON.stringify(session));
  for (const name of Object.keys(plain)) if (plain[name] === null) delete plain[name];
  return plain;
}

function fieldsOf(data) {
  const fields = new Map();
  for (const [name, value] of Object.entries(data)) {
    if (value !== null && value !== undefined) fields.set(name, JSON.stringify(value));
  }
  return fields;
}

/**
 * The merge patch from the loaded fields (Map name -> JSON text) to `plain`: changed and added
 * members with their new values, removed ones as null.
 */
function diffFields(loaded, plain) {
  const patch = {};
  for (const [name, value] of Object.entries(plain)) {
    if (value === null || value === undefined) continue;
    if (loaded.get(name) !== JSON.stringify(value)) patch[name] = value;
  }
  for (const name of loaded.keys()) {
    if (!Object.prototype.hasOwnProperty.call(plain, name) || plain[name] === null) patch[name] = null;
  }
  return patch;
}

function normalizeOwner(owner) {
  if (owner === undefined || owner === null || owner === '') return undefined;
  const id = String(owner);
  if (!/^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$/.test(id)) {
    throw new TidemarkError(`tidemark: owner id ${JSON.stringify(id)} is not printable ASCII (it is sent in a header)`);
  }
  return id;
}

function isObject(v) {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function parseJson(text, method, path) {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new TidemarkError(`tidemark: ${method} ${path} answered something that is not JSON`, { cause: err });
  }
}

function safeDecode(k) {
  try {
    return decodeURIComponent(k);
  } catch (_) {
    return k;
  }
}

function describeFailure(err) {
  if (err && err.name === 'TimeoutError') return 'timed out';
  const cause = err && err.cause;
  const code = (cause && (cause.code || (cause.errors && cause.errors[0] && cause.errors[0].code))) || (err && err.code);
  const msg = (cause && cause.message) || (err && err.message) || String(err);
  return code && !msg.includes(code) ? `${code}: ${msg}` : msg;
}

async function eachLimited(items, limit, fn) {
  let next = 0;
  const workers = [];
  for (let w = 0; w < Math.min(limit, items.length); w++) {
    workers.push((async () => {
      while (next < items.length) {
        const item = items[next++];
        await fn(item);
      }
    })());
  }
  await Promise.all(workers);
}

module.exports = {
  TidemarkStore,
  TidemarkError,
  tidemarkStamp,
  nextStamp,
  diffFields,
};
