'use strict';

// all, length and clear against a real tidemark; unreachable and unauthorized servers.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const session = require('express-session');
const { TidemarkStore, TidemarkError } = require('..');
const { startTidemark } = require('../test-support/tidemark');

const TOKEN = 'express-test-token';
let tidemark;

before(async () => {
  tidemark = await startTidemark({ token: TOKEN });
});

after(async () => {
  if (tidemark) await tidemark.stop();
});

function newSession(store, sid, fields) {
  const req = { sessionID: sid, sessionStore: store };
  store.generate = (r) => {
    r.session = new session.Session(r);
    r.session.cookie = new session.Cookie({ maxAge: 60000 });
  };
  store.generate(req);
  Object.assign(req.session, fields);
  return req.session;
}

test('set, get, all, length, clear under one prefix; other prefixes untouched', async () => {
  const store = new TidemarkStore({ url: tidemark.url, token: TOKEN, prefix: 'list:' });
  const other = new TidemarkStore({ url: tidemark.url, token: TOKEN, prefix: 'other:' });
  const sids = ['a', 'b/with slash', 'c%ü'];
  for (const sid of sids) await store.set(sid, newSession(store, sid, { n: sid }));
  await other.set('x', newSession(other, 'x', { n: 'x' }));

  const got = await store.get('b/with slash');
  assert.equal(got.n, 'b/with slash');
  assert.equal(got.cookie.originalMaxAge, 60000);
  assert.equal(await store.length(), 3);
  const all = await store.all();
  assert.deepEqual(Object.keys(all).sort(), [...sids].sort());
  assert.equal(all['c%ü'].n, 'c%ü');

  await store.clear();
  assert.equal(await store.length(), 0);
  assert.equal(await store.get('a'), null);
  assert.equal((await other.get('x')).n, 'x');
});

test('a removed field is gone after the PATCH', async () => {
  const store = new TidemarkStore({ url: tidemark.url, token: TOKEN, prefix: 'rm:' });
  const req = { sessionID: 's1', sessionStore: store, _tidemarkStamp: undefined };
  await store.set('s1', newSession(store, 's1', { keep: 1, drop: 2, nested: { x: 1, y: 2 } }));
  store.createSession(req, await store.get('s1'));
  delete req.session.drop;
  req.session.nested = { x: 1 };
  await store.set('s1', req.session);
  const after = await store.get('s1');
  assert.equal(after.keep, 1);
  assert.equal('drop' in after, false);
  assert.deepEqual(after.nested, { x: 1 }, 'a top-level member replaces the field whole');
});

test('a wrong token is a clear error', async () => {
  const store = new TidemarkStore({ url: tidemark.url, token: 'wrong' });
  const err = await store.get('a').then(() => null, (e) => e);
  assert.ok(err instanceof TidemarkError);
  assert.equal(err.status, 401);
  assert.match(err.message, /answered 401/);
});

test('what the server records from a write: owner, expiry, lifetime cap, the request stamp', async () => {
  const store = new TidemarkStore({ url: tidemark.url, token: TOKEN, prefix: 'hdr:', ttl: 120, maxLifetime: 600, ownerOf: (s) => s.userId });
  const stamp = BigInt(Date.now()) * 1000n;
  const sess = newSession(store, 'h1', { userId: 'frank' });
  sess.req._tidemarkStamp = stamp;
  await store.set('h1', sess);
  const res = await fetch(`${tidemark.url}/keys/${encodeURIComponent('hdr:h1')}`, { headers: { authorization: `Bearer ${TOKEN}` } });
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type'), /^application\/json/);
  assert.equal(res.headers.get('x-write-timestamp'), String(stamp));
  assert.equal(res.headers.get('x-session-owner'), 'frank');
  const now = BigInt(Date.now()) * 1000n;
  const expires = BigInt(res.headers.get('x-expires-at'));
  assert.ok(expires > now + 100n * 1000000n && expires <= now + 121n * 1000000n, `X-Expires-At ${expires} is about 120 s ahead`);
  const ends = BigInt(res.headers.get('x-lifetime-ends-at'));
  assert.ok(ends > now + 580n * 1000000n && ends <= now + 601n * 1000000n, `X-Lifetime-Ends-At ${ends} is about 600 s ahead`);
  assert.deepEqual(await res.json(), JSON.parse(JSON.stringify(sess)));
});
