'use strict';

// A real Express app with express-session over a given store, driven over HTTP by clients
// with hand-written cookie jars. Routes can be held at a gate so that tests decide the
// order in which overlapping requests load and save their session.

const express = require('express');
const session = require('express-session');
const { tidemarkStamp, nextStamp } = require('..');

function deferred() {
  let resolve;
  const promise = new Promise((r) => { resolve = r; });
  return { promise, resolve };
}

/** A gate: `arrived` resolves when a request reached its handler, `release` lets it go on. */
function makeGates() {
  const gates = new Map();
  return function gate(name) {
    if (!gates.has(name)) gates.set(name, { arrived: deferred(), release: deferred() });
    return gates.get(name);
  };
}

const GATE_TIMEOUT_MS = 10000;

/**
 * Starts the app on 127.0.0.1:0. Resolves { url, gate, errors, close() }.
 * `errors` collects every error that reached Express's error handling (a failed save too).
 */
async function startApp(store) {
  const app = express();
  const gate = makeGates();
  const errors = [];

  app.use(tidemarkStamp());
  app.use(session({
    store,
    secret: 'test secret',
    resave: false,
    saveUninitialized: false,
    cookie: { maxAge: 3600 * 1000 },
  }));

  // Holds the request at gate `name` (when given) until the test releases it.
  async function hold(req) {
    const name = req.query.gate;
    if (!name) return;
    const g = gate(name);
    g.arrived.resolve();
    let timer;
    await Promise.race([
      g.release.promise,
      new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`gate ${name} never released`)), GATE_TIMEOUT_MS); }),
    ]).finally(() => clearTimeout(timer));
  }

  const route = (fn) => (req, res, next) => Promise.resolve(fn(req, res)).catch(next);

  app.post('/login', route(async (req, res) => {
    req.session.userId = String(req.query.user);
    res.json({ sid: req.sessionID });
  }));

  app.get('/whoami', (req, res) => {
    const fields = { ...req.session };
    delete fields.cookie;
    res.json({ sid: req.sessionID, userId: req.session.userId ?? null, fields });
  });

  // Sets session[field] = value, then waits at the gate (the request goes on for a while).
  app.post('/change', route(async (req, res) => {
    req.session[req.query.field] = req.query.value;
    await hold(req);
    res.json({ ok: true });
  }));

  // Changes a field, saves explicitly, changes it again: the automatic save writes it once more.
  app.post('/change-twice', route(async (req, res) => {
    req.session.step = 'first';
    await new Promise((resolve, reject) => req.session.save((err) => (err ? reject(err) : resolve())));
    req.session.step = 'second';
    res.json({ ok: true });
  }));

  // Saves a change, then logs out, in one request.
  app.post('/save-then-logout', route(async (req, res) => {
    req.session.last = 'seen';
    await new Promise((resolve, reject) => req.session.save((err) => (err ? reject(err) : resolve())));
    await new Promise((resolve, reject) => req.session.destroy((err) => (err ? reject(err) : resolve())));
    res.json({ ok: true });
  }));

  // The user leaves the session without destroying it: the session has no owner any more.
  app.post('/forget-user', route(async (req, res) => {
    delete req.session.userId;
    res.json({ ok: true });
  }));

  app.post('/logout', route(async (req, res) => {
    await new Promise((resolve, reject) => req.session.destroy((err) => (err ? reject(err) : resolve())));
    res.json({ ok: true });
  }));

  app.post('/logout-everywhere', route(async (req, res) => {
    const owner = req.session.userId;
    if (!owner) return res.status(401).json({ error: 'not logged in' });
    const result = await store.revokeOwner(owner, req.query.keep ? { keep: req.sessionID } : {});
    res.json(result);
  }));

  app.use((err, req, res, next) => {
    errors.push(err);
    if (res.headersSent) return next(err);
    res.status(500).json({ error: err.message });
  });

  const server = await new Promise((resolve) => {
    const s = app.listen(0, '127.0.0.1', () => resolve(s));
  });
  const url = `http://127.0.0.1:${server.address().port}`;
  return {
    url,
    gate,
    errors,
    close: () => new Promise((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    }),
  };
}

/** A browser of one user: a cookie jar and fetch. */
class Client {
  constructor(baseUrl) {
    this.baseUrl = baseUrl;
    this.cookies = new Map();
  }

  async request(method, path) {
    const headers = {};
    if (this.cookies.size) headers.cookie = [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; ');
    const res = await fetch(this.baseUrl + path, { method, headers, redirect: 'manual', signal: AbortSignal.timeout(15000) });
    for (const line of res.headers.getSetCookie()) {
      const [pair, ...attrs] = line.split(';');
      const eq = pair.indexOf('=');
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      const expired = attrs.some((a) => {
        const [k, v] = a.trim().split('=');
        if (/^max-age$/i.test(k)) return Number(v) <= 0;
        if (/^expires$/i.test(k)) return Date.parse(v) <= Date.now();
        return false;
      });
      if (expired) this.cookies.delete(name);
      else this.cookies.set(name, value);
    }
    const text = await res.text();
    let body;
    try {
      body = JSON.parse(text);
    } catch (_) {
      body = text;
    }
    return { status: res.status, body };
  }

  get(path) { return this.request('GET', path); }

  post(path) { return this.request('POST', path); }
}

/** A fetch that records (method, path, status) of every call, for assertions on what happened underneath. */
function recordingFetch() {
  const log = [];
  const f = async (url, init = {}) => {
    const res = await fetch(url, init);
    log.push({ method: init.method || 'GET', path: new URL(url).pathname, status: res.status });
    return res;
  };
  f.log = log;
  return f;
}

/**
 * The plain whole-session store, as connect-redis behaves: get the JSON, set PUTs the whole
 * session back (stamped when it saves, since tidemark needs a stamp), destroy deletes it.
 */
class WholeSessionStore extends session.Store {
  constructor({ url, token, prefix = 'whole:' }) {
    super();
    this.url = url;
    this.token = token;
    this.prefix = prefix;
  }

  _send(method, sid, headers = {}, body) {
    const h = { ...headers };
    if (this.token) h.authorization = `Bearer ${this.token}`;
    return fetch(`${this.url}/keys/${encodeURIComponent(this.prefix + sid)}`, { method, headers: h, body });
  }

  get(sid, cb) {
    this._send('GET', sid)
      .then(async (res) => {
        const text = await res.text();
        if (res.status === 404) return null;
        if (res.status !== 200) throw new Error(`GET answered ${res.status}`);
        return JSON.parse(text);
      })
      .then((v) => cb(null, v), cb);
  }

  set(sid, sess, cb) {
    this._send('PUT', sid, {
      'content-type': 'application/json',
      'x-write-timestamp': String(nextStamp()),
      'x-ttl': '3600',
    }, JSON.stringify(sess))
      .then(async (res) => {
        await res.arrayBuffer();
        if (res.status !== 201 && res.status !== 204 && res.status !== 409) throw new Error(`PUT answered ${res.status}`);
      })
      .then(() => cb(null), cb);
  }

  destroy(sid, cb) {
    this._send('DELETE', sid, { 'x-write-timestamp': String(nextStamp()) })
      .then(async (res) => {
        await res.arrayBuffer();
        if (![204, 404, 409].includes(res.status)) throw new Error(`DELETE answered ${res.status}`);
      })
      .then(() => cb(null), cb);
  }
}

module.exports = { startApp, Client, recordingFetch, WholeSessionStore };
