'use strict';

// The store against a fake fetch: what it sends and how it reads the answers.

const { test, describe } = require('node:test');
const assert = require('node:assert/strict');
const session = require('express-session');
const { TidemarkStore, TidemarkError, tidemarkStamp, nextStamp, diffFields } = require('..');

/** A fetch that records every call and answers with `respond(call)` -> { status, body, headers }. */
function fakeFetch(respond) {
  const calls = [];
  const fetch = async (url, init = {}) => {
    const u = new URL(url);
    const call = {
      method: init.method || 'GET',
      url,
      path: u.pathname,
      search: u.search,
      headers: Object.fromEntries(Object.entries(init.headers || {}).map(([k, v]) => [k.toLowerCase(), v])),
      body: init.body,
    };
    calls.push(call);
    const { status = 200, body = '', headers = {} } = (await respond(call)) || {};
    const text = typeof body === 'string' ? body : JSON.stringify(body);
    return new Response(status === 204 ? null : text, { status, headers });
  };
  fetch.calls = calls;
  return fetch;
}

function promisify(fn) {
  return new Promise((resolve, reject) => fn((err, v) => (err ? reject(err) : resolve(v))));
}

const stored = {
  cookie: { originalMaxAge: null, expires: null, httpOnly: true, path: '/' },
  userId: 'u1',
  cart: ['apple'],
  theme: 'dark',
};

/** A store whose GET answers `stored` and whose PATCH answers 200, with a session loaded through express-session's createSession. */
async function loadedSession(options = {}, answers = {}) {
  const fetch = fakeFetch((call) => {
    if (call.method === 'GET') {
      return { status: 200, body: stored, headers: { 'content-type': 'application/json', 'x-session-owner': 'u1' } };
    }
    if (call.method === 'PATCH') return answers.patch || { status: 200, body: { applied: [], unchanged: [], refused: [], timestamp: 1 } };
    if (call.method === 'POST') return { status: 200, body: { expires_at: 1 } };
    if (call.method === 'DELETE') return { status: 204 };
    return { status: 500 };
  });
  const store = new TidemarkStore({ url: 'http://tidemark.test', ownerOf: (s) => s.userId, ...options, fetch });
  // A request as express-session builds it, with its stamp.
  const req = { sessionID: 'abc', sessionStore: store, _tidemarkStamp: 1700000000000000n };
  const data = await store.get('abc');
  store.createSession(req, data);
  return { store, fetch, req, sess: req.session };
}

describe('diff of top-level fields', () => {
  test('a changed, an added and a removed field make the PATCH body; unchanged ones are left out', async () => {
    const { store, fetch, sess } = await loadedSession();
    sess.cart = ['apple', 'pear']; // changed
    sess.lang = 'fr'; // added
    delete sess.theme; // removed
    await promisify((cb) => store.set('abc', sess, cb));
    const patch = fetch.calls.find((c) => c.method === 'PATCH');
    assert.ok(patch, 'a PATCH was sent');
    assert.equal(patch.path, '/keys/sess%3Aabc');
    assert.equal(patch.headers['content-type'], 'application/merge-patch+json');
    assert.deepEqual(JSON.parse(patch.body), { cart: ['apple', 'pear'], lang: 'fr', theme: null });
    assert.equal(patch.headers['x-write-timestamp'], '1700000000000000');
    assert.equal(patch.headers['x-ttl'], '86400', 'no ttl option and a browser-session cookie: the default');
    assert.equal(patch.headers['x-session-owner'], undefined, 'the owner did not change');
  });

  test('a field set to null is removed', async () => {
    const { store, fetch, sess } = await loadedSession();
    sess.theme = null;
    await store.set('abc', sess);
    assert.deepEqual(JSON.parse(fetch.calls.at(-1).body), { theme: null });
  });

  test('nothing changed: touch, not PATCH', async () => {
    const { store, fetch, sess } = await loadedSession({ ttl: 120 });
    await store.set('abc', sess);
    const last = fetch.calls.at(-1);
    assert.equal(last.method, 'POST');
    assert.equal(last.path, '/keys/sess%3Aabc/touch');
    assert.equal(last.headers['x-ttl'], '120');
    assert.ok(!fetch.calls.some((c) => c.method === 'PATCH'));
  });

  test('a second save in the same request sends only what changed since the first, one µs later', async () => {
    const { store, fetch, sess } = await loadedSession();
    sess.theme = 'light';
    await store.set('abc', sess);
    sess.lang = 'de';
    await store.set('abc', sess);
    const patches = fetch.calls.filter((c) => c.method === 'PATCH');
    assert.deepEqual(patches.map((p) => JSON.parse(p.body)), [{ theme: 'light' }, { lang: 'de' }]);
    assert.deepEqual(patches.map((p) => p.headers['x-write-timestamp']), ['1700000000000000', '1700000000000001']);
  });

  test('a new session (never loaded) is PATCHed whole, with its owner', async () => {
    const fetch = fakeFetch(() => ({ status: 201, body: { applied: ['cookie', 'userId'], unchanged: [], refused: [], timestamp: 5 } }));
    const store = new TidemarkStore({ url: 'http://tidemark.test/', ownerOf: (s) => s.userId, maxLifetime: 604800, fetch });
    const req = { sessionID: 'new1', sessionStore: store, _tidemarkStamp: 1700000000000123n };
    store.generate = (r) => {
      r.session = new session.Session(r);
      r.session.cookie = new session.Cookie({ maxAge: 60000 });
    };
    store.generate(req);
    req.session.userId = 'u7';
    await store.set('new1', req.session);
    const [call] = fetch.calls;
    assert.equal(call.method, 'PATCH');
    assert.equal(call.url, 'http://tidemark.test/keys/sess%3Anew1');
    const body = JSON.parse(call.body);
    assert.deepEqual(Object.keys(body).sort(), ['cookie', 'userId']);
    assert.equal(body.userId, 'u7');
    assert.equal(call.headers['x-session-owner'], 'u7');
    assert.equal(call.headers['x-max-lifetime'], '604800');
    assert.equal(call.headers['x-ttl'], '60');
    assert.equal(call.headers['x-write-timestamp'], '1700000000000123');
  });

  test('login: the owner is sent when ownerOf differs from the loaded owner', async () => {
    const { store, fetch, sess } = await loadedSession();
    sess.userId = 'u2';
    await store.set('abc', sess);
    assert.equal(fetch.calls.at(-1).headers['x-session-owner'], 'u2');
  });

  test('a session that lost its owner clears it with an empty X-Session-Owner', async () => {
    const { store, fetch, sess } = await loadedSession();
    delete sess.userId;
    await store.set('abc', sess);
    const last = fetch.calls.at(-1);
    assert.equal(last.headers['x-session-owner'], '');
    assert.deepEqual(JSON.parse(last.body), { userId: null });
  });

  test('without ownerOf, no X-Session-Owner at all', async () => {
    const { store, fetch, sess } = await loadedSession({ ownerOf: undefined });
    sess.userId = 'u9';
    await store.set('abc', sess);
    assert.equal('x-session-owner' in fetch.calls.at(-1).headers, false);
  });

  test('diffFields on its own', () => {
    const loaded = new Map([['a', '1'], ['b', '{"x":1}'], ['c', '"k"']]);
    assert.deepEqual(diffFields(loaded, { a: 1, b: { x: 2 }, d: true }), { b: { x: 2 }, d: true, c: null });
    assert.deepEqual(diffFields(loaded, { a: 1, b: { x: 1 }, c: 'k' }), {});
  });
});

describe('answers', () => {
  test('get: 404 is no session', async () => {
    const fetch = fakeFetch(() => ({ status: 404, body: { type: 'urn:tidemark:problem:not-found' }, headers: { 'content-type': 'application/problem+json' } }));
    const store = new TidemarkStore({ url: 'http://tidemark.test', fetch });
    assert.equal(await promisify((cb) => store.get('nope', cb)), null);
    assert.equal(fetch.calls[0].path, '/keys/sess%3Anope');
  });

  test('set: 409 (every field refused) is not an error', async () => {
    const { store, sess } = await loadedSession({}, {
      patch: { status: 409, body: { type: 'urn:tidemark:problem:stale-timestamp' }, headers: { 'content-type': 'application/problem+json' } },
    });
    sess.theme = 'light';
    let refused;
    store.on('refused', (e) => { refused = e; });
    await promisify((cb) => store.set('abc', sess, cb));
    assert.deepEqual(refused, { sid: 'abc', fields: ['theme'] });
  });

  test('set: 200 with some fields refused emits them; the applied ones are not sent again', async () => {
    const { store, fetch, sess } = await loadedSession({}, {
      patch: { status: 200, body: { applied: ['lang'], unchanged: [], refused: [{ field: 'theme', current_timestamp: 9 }], timestamp: 9 } },
    });
    const events = [];
    store.on('refused', (e) => events.push(e));
    sess.theme = 'light';
    sess.lang = 'it';
    await store.set('abc', sess);
    assert.deepEqual(events, [{ sid: 'abc', fields: ['theme'] }]);
    sess.cart = [];
    await store.set('abc', sess);
    assert.deepEqual(JSON.parse(fetch.calls.at(-1).body), { theme: 'light', cart: [] });
  });

  test('503 database-unavailable is a callback error with a clear message', async () => {
    const fetch = fakeFetch(() => ({
      status: 503,
      body: { type: 'urn:tidemark:problem:database-unavailable', title: 'Database unavailable', detail: 'the database did not answer' },
      headers: { 'content-type': 'application/problem+json' },
    }));
    const store = new TidemarkStore({ url: 'http://tidemark.test', fetch });
    const err = await promisify((cb) => store.get('abc', cb)).then(() => null, (e) => e);
    assert.ok(err instanceof TidemarkError);
    assert.equal(err.status, 503);
    assert.equal(err.problem, 'database-unavailable');
    assert.match(err.message, /GET \/keys\/sess%3Aabc answered 503 database-unavailable: the database did not answer/);
    assert.notEqual(err.code, 'ENOENT', 'express-session would take ENOENT for "no session"');
    const err2 = await promisify((cb) => store.destroy('abc', cb)).then(() => null, (e) => e);
    assert.equal(err2.status, 503);
    const err3 = await promisify((cb) => store.touch('abc', { cookie: {} }, cb)).then(() => null, (e) => e);
    assert.equal(err3.status, 503);
  });

  test('a connection failure is a callback error naming the server', async () => {
    const fetch = async () => {
      const e = new TypeError('fetch failed');
      e.cause = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:9'), { code: 'ECONNREFUSED' });
      throw e;
    };
    const store = new TidemarkStore({ url: 'http://127.0.0.1:9', fetch });
    const err = await promisify((cb) => store.get('abc', cb)).then(() => null, (e) => e);
    assert.ok(err instanceof TidemarkError);
    assert.equal(err.code, 'ETIDEMARK_UNREACHABLE');
    assert.match(err.message, /cannot reach http:\/\/127\.0\.0\.1:9 .*ECONNREFUSED/);
  });

  test('a real refused connection (nothing listening) is an error too', async () => {
    const net = require('node:net');
    const port = await new Promise((resolve) => {
      const s = net.createServer().listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)); });
    });
    const store = new TidemarkStore({ url: `http://127.0.0.1:${port}`, timeout: 2000 });
    await assert.rejects(store.get('abc'), /cannot reach/);
  });

  test('destroy: 409 (a newer write exists) and 404 are fine', async () => {
    for (const status of [204, 404, 409]) {
      const fetch = fakeFetch(() => ({ status }));
      const store = new TidemarkStore({ url: 'http://tidemark.test', fetch });
      await promisify((cb) => store.destroy('abc', cb));
      assert.equal(fetch.calls[0].method, 'DELETE');
      assert.match(fetch.calls[0].headers['x-write-timestamp'], /^\d{16}$/);
    }
  });

  test('touch: 404 is fine', async () => {
    const fetch = fakeFetch(() => ({ status: 404 }));
    const store = new TidemarkStore({ url: 'http://tidemark.test', fetch });
    await store.touch('abc', { cookie: { maxAge: 5000 } });
    assert.equal(fetch.calls[0].headers['x-ttl'], '5');
  });

  test('the token is sent on every request', async () => {
    const fetch = fakeFetch((c) => {
      if (c.method === 'GET' && c.path === '/keys') return { status: 200, body: { keys: ['sess%3Aa'], next_cursor: null } };
      if (c.method === 'GET') return { status: 200, body: { cookie: {}, n: 1 } };
      if (c.method === 'DELETE' && c.path.startsWith('/owners/')) return { status: 200, body: { revoked: 0, kept: [] } };
      return { status: c.method === 'DELETE' ? 204 : 200, body: {} };
    });
    const store = new TidemarkStore({ url: 'http://tidemark.test', token: 's3cret', fetch });
    await store.get('a');
    await store.set('a', { cookie: {}, n: 2 });
    await store.touch('a', { cookie: {} });
    await store.destroy('a');
    await store.all();
    await store.length();
    await store.clear();
    await store.revokeOwner('u1');
    assert.ok(fetch.calls.length >= 8);
    for (const c of fetch.calls) assert.equal(c.headers.authorization, 'Bearer s3cret', `${c.method} ${c.path}`);
  });

  test('no token, no Authorization header', async () => {
    const fetch = fakeFetch(() => ({ status: 404 }));
    const store = new TidemarkStore({ url: 'http://tidemark.test', fetch });
    await store.get('a');
    assert.equal(fetch.calls[0].headers.authorization, undefined);
  });
});

describe('listing, revoking', () => {
  test('all and length page through GET /keys?prefix=; clear deletes each key with a stamp', async () => {
    const pages = {
      '': { keys: ['sess%3Aa', 'sess%3Ab%2Fc'], next_cursor: 'p2' },
      p2: { keys: ['sess%3Ad'], next_cursor: null },
    };
    const fetch = fakeFetch((c) => {
      if (c.path === '/keys') {
        const q = new URLSearchParams(c.search);
        assert.equal(q.get('prefix'), 'sess:');
        return { status: 200, body: pages[q.get('cursor') || ''] };
      }
      if (c.method === 'GET') return c.path === '/keys/sess%3Ad' ? { status: 404 } : { status: 200, body: { cookie: {}, at: c.path } };
      if (c.method === 'DELETE') return { status: 204 };
      return { status: 500 };
    });
    const store = new TidemarkStore({ url: 'http://tidemark.test', fetch });
    assert.equal(await promisify((cb) => store.length(cb)), 3);
    const all = await promisify((cb) => store.all(cb));
    assert.deepEqual(Object.keys(all).sort(), ['a', 'b/c']);
    assert.equal(all['b/c'].at, '/keys/sess%3Ab%2Fc');
    await promisify((cb) => store.clear(cb));
    const deletes = fetch.calls.filter((c) => c.method === 'DELETE');
    assert.deepEqual(deletes.map((c) => c.path).sort(), ['/keys/sess%3Aa', '/keys/sess%3Ab%2Fc', '/keys/sess%3Ad']);
    for (const d of deletes) assert.match(d.headers['x-write-timestamp'], /^\d{16}$/);
  });

  test('revokeOwner sends DELETE /owners/{owner}/sessions?keep= with a stamp of now', async () => {
    const fetch = fakeFetch(() => ({ status: 200, body: { revoked: 2, kept: [{ key: 'sess%3Ame', timestamp: 7 }] } }));
    const store = new TidemarkStore({ url: 'http://tidemark.test', fetch });
    const before = BigInt(Date.now()) * 1000n;
    const result = await store.revokeOwner('user/1', { keep: 'me' });
    assert.deepEqual(result, { revoked: 2, kept: [{ key: 'sess:me', sid: 'me', timestamp: 7 }] });
    const [c] = fetch.calls;
    assert.equal(c.method, 'DELETE');
    assert.equal(c.path, '/owners/user%2F1/sessions');
    assert.equal(new URLSearchParams(c.search).get('keep'), 'sess:me');
    assert.match(c.search, /keep=sess%3Ame/);
    assert.ok(BigInt(c.headers['x-write-timestamp']) >= before);
    await store.revokeOwner('u2');
    assert.equal(fetch.calls[1].search, '');
    await assert.rejects(store.revokeOwner('u3', { keep: ['a', 'b'] }), /one session ID/);
    await assert.rejects(store.revokeOwner(undefined), /owner id is required/);
  });
});

describe('stamps', () => {
  test('nextStamp is strictly increasing and close to the wall clock, in µs', () => {
    let prev = nextStamp();
    for (let i = 0; i < 20000; i++) {
      const s = nextStamp();
      assert.ok(s > prev, `${s} > ${prev}`);
      prev = s;
    }
    const wall = BigInt(Date.now()) * 1000n;
    const drift = prev > wall ? prev - wall : wall - prev;
    assert.ok(drift < 2000000n, `within 2 s of the wall clock (drift ${drift} µs)`);
    assert.equal(String(prev).length, 16);
  });

  test('tidemarkStamp() records the request start, and destroy uses it', async () => {
    const fetch = fakeFetch(() => ({ status: 204 }));
    const store = new TidemarkStore({ url: 'http://tidemark.test', fetch });
    const req = {};
    const mw = tidemarkStamp();
    let inside;
    const before = nextStamp();
    await new Promise((resolve) => mw(req, {}, () => {
      inside = (async () => {
        await new Promise((r) => setTimeout(r, 20)); // the request goes on a while
        await store.destroy('abc');
      })();
      resolve();
    }));
    await inside;
    assert.equal(typeof req._tidemarkStamp, 'bigint');
    assert.ok(req._tidemarkStamp > before);
    assert.equal(fetch.calls[0].headers['x-write-timestamp'], String(req._tidemarkStamp));
  });

  test('without a request stamp, writes use the current time', async () => {
    const fetch = fakeFetch(() => ({ status: 201, body: { applied: [], unchanged: [], refused: [] } }));
    const store = new TidemarkStore({ url: 'http://tidemark.test', fetch });
    const before = nextStamp();
    await store.set('x', { cookie: {}, a: 1 });
    await store.set('y', { cookie: {}, a: 1 });
    const [s1, s2] = fetch.calls.map((c) => BigInt(c.headers['x-write-timestamp']));
    assert.ok(s1 > before && s2 > s1);
  });
});

test('constructor checks its options', () => {
  assert.throws(() => new TidemarkStore({}), /url/);
  assert.throws(() => new TidemarkStore({ url: 'http://x', ttl: -1 }), /ttl/);
  assert.ok(new TidemarkStore({ url: 'http://x' }) instanceof session.Store);
});
