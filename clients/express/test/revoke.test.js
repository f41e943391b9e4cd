'use strict';

// "Log out everywhere": every session of the user ends, except (with keep) the current one.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { TidemarkStore } = require('..');
const { startTidemark } = require('../test-support/tidemark');
const { startApp, Client } = require('../test-support/app');

const TOKEN = 'express-test-token';
let tidemark;
let store;
let app;

before(async () => {
  tidemark = await startTidemark({ token: TOKEN });
  store = new TidemarkStore({ url: tidemark.url, token: TOKEN, ownerOf: (s) => s.userId });
  app = await startApp(store);
});

after(async () => {
  if (app) await app.close();
  if (tidemark) await tidemark.stop();
});

async function ownerSessions(owner) {
  const res = await fetch(`${tidemark.url}/owners/${encodeURIComponent(owner)}/sessions?limit=100`, {
    headers: { authorization: `Bearer ${TOKEN}` },
  });
  assert.equal(res.status, 200, `GET /owners/${owner}/sessions`);
  return (await res.json()).sessions.map((s) => decodeURIComponent(s.key)).sort();
}

async function loggedInAs(clients) {
  return Promise.all(clients.map(async (c) => (await c.get('/whoami')).body.userId));
}

test('log out everywhere else (keep the current session), then everywhere', async () => {
  const devices = [new Client(app.url), new Client(app.url), new Client(app.url)];
  const sids = [];
  for (const d of devices) sids.push((await d.post('/login?user=carol')).body.sid);
  const other = new Client(app.url);
  await other.post('/login?user=dave');
  assert.deepEqual(await loggedInAs([...devices, other]), ['carol', 'carol', 'carol', 'dave']);
  assert.deepEqual(await ownerSessions('carol'), sids.map((s) => `sess:${s}`).sort(), 'the store recorded the owner at login');

  const res = await devices[0].post('/logout-everywhere?keep=1');
  assert.equal(res.status, 200);
  assert.equal(res.body.revoked, 2);
  assert.deepEqual(res.body.kept.map((k) => [k.key, k.sid]), [[`sess:${sids[0]}`, sids[0]]]);
  assert.deepEqual(await loggedInAs([...devices, other]), ['carol', null, null, 'dave'], 'only the current session survives; another user is untouched');
  for (const sid of sids.slice(1)) assert.equal(await store.get(sid), null);

  const all = await devices[0].post('/logout-everywhere');
  assert.equal(all.status, 200);
  assert.equal(all.body.revoked, 1);
  assert.deepEqual(all.body.kept, []);
  assert.deepEqual(await loggedInAs([...devices, other]), [null, null, null, 'dave']);
  assert.deepEqual(app.errors, []);
});

test('a request that began before "log out everywhere" does not bring its session back', async () => {
  const phone = new Client(app.url);
  const laptop = new Client(app.url);
  await phone.post('/login?user=erin');
  await laptop.post('/login?user=erin');

  const slow = phone.post('/change?field=cart&value=shoes&gate=phone-slow');
  await app.gate('phone-slow').arrived.promise;
  const revoke = await laptop.post('/logout-everywhere');
  assert.equal(revoke.body.revoked, 2);
  app.gate('phone-slow').release.resolve();
  assert.equal((await slow).status, 200);

  assert.deepEqual(await loggedInAs([phone, laptop]), [null, null]);
  assert.deepEqual(app.errors, []);
});

test('a session whose user left it (no owner any more) is not one of the user\'s sessions', async () => {
  const a = new Client(app.url);
  const b = new Client(app.url);
  const sidA = (await a.post('/login?user=gina')).body.sid;
  const sidB = (await b.post('/login?user=gina')).body.sid;
  assert.deepEqual(await ownerSessions('gina'), [`sess:${sidA}`, `sess:${sidB}`].sort());
  assert.equal((await b.post('/forget-user')).status, 200);
  assert.deepEqual(await ownerSessions('gina'), [`sess:${sidA}`], 'the empty X-Session-Owner cleared the owner');
  const revoke = await a.post('/logout-everywhere');
  assert.equal(revoke.body.revoked, 1);
  assert.equal((await b.get('/whoami')).body.sid, sidB, 'the anonymous session lives on');
  assert.deepEqual(app.errors, []);
});
