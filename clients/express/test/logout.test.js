'use strict';

// A logout is not undone by a slower request of the same session that began before the
// logout and saves after it. With a whole-session store the slow save brings the session back.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { TidemarkStore } = require('..');
const { startTidemark } = require('../test-support/tidemark');
const { startApp, Client, recordingFetch, WholeSessionStore } = require('../test-support/app');

const TOKEN = 'express-test-token';
let tidemark;

before(async () => {
  tidemark = await startTidemark({ token: TOKEN });
});

after(async () => {
  if (tidemark) await tidemark.stop();
});

/** Logs in; a slow request loads the session and waits; a logout runs to its end; then the slow one saves. */
async function logoutDuringSlowRequest(app) {
  const client = new Client(app.url);
  const login = await client.post('/login?user=bob');
  assert.equal(login.status, 200);
  assert.equal((await client.get('/whoami')).body.userId, 'bob');

  const slow = client.post('/change?field=cart&value=book&gate=slow');
  await app.gate('slow').arrived.promise; // the slow request began (and loaded) before the logout
  const logout = await client.post('/logout');
  assert.equal(logout.status, 200);
  app.gate('slow').release.resolve();
  const slowDone = await slow; // it saves after the logout
  assert.equal(slowDone.status, 200);
  return { client, sid: login.body.sid };
}

test('with a whole-session store, the slow request undoes the logout', async () => {
  const store = new WholeSessionStore({ url: tidemark.url, token: TOKEN, prefix: 'whole:' });
  const app = await startApp(store);
  try {
    const { client } = await logoutDuringSlowRequest(app);
    const me = await client.get('/whoami');
    assert.equal(me.body.userId, 'bob', 'the user is logged in again: the slow save wrote the session back');
  } finally {
    await app.close();
  }
});

test('with TidemarkStore, the logout stands', async () => {
  const fetch = recordingFetch();
  const store = new TidemarkStore({ url: tidemark.url, token: TOKEN, ownerOf: (s) => s.userId, fetch });
  const app = await startApp(store);
  try {
    const { client, sid } = await logoutDuringSlowRequest(app);
    const me = await client.get('/whoami');
    assert.equal(me.body.userId, null, 'the user stays logged out');
    assert.equal(await store.get(sid), null, 'the session is not readable');
    const key = `/keys/${encodeURIComponent(`sess:${sid}`)}`;
    const writes = fetch.log.filter((c) => c.path === key && c.method !== 'GET');
    assert.deepEqual(
      writes.map((c) => `${c.method} ${c.status}`),
      ['PATCH 201', 'DELETE 204', 'PATCH 409'],
      'login created it, the logout deleted it, the slow save (stamped before the logout) was refused',
    );
    assert.deepEqual(app.errors, [], 'the refused save is not an error for the app');
  } finally {
    await app.close();
  }
});

test('within one request, a later write of the same session comes after the earlier one', async () => {
  const fetch = recordingFetch();
  const store = new TidemarkStore({ url: tidemark.url, token: TOKEN, ownerOf: (s) => s.userId, fetch });
  const app = await startApp(store);
  try {
    const client = new Client(app.url);
    const sid = (await client.post('/login?user=hank')).body.sid;
    assert.equal((await client.post('/change-twice')).status, 200);
    assert.equal((await client.get('/whoami')).body.fields.step, 'second', 'the second save was not refused as a tie');

    assert.equal((await client.post('/save-then-logout')).status, 200);
    assert.equal((await client.get('/whoami')).body.userId, null, 'the destroy after the save took effect');
    assert.equal(await store.get(sid), null);
    const key = `/keys/${encodeURIComponent(`sess:${sid}`)}`;
    assert.deepEqual(
      fetch.log.filter((c) => c.path === key && c.method !== 'GET').map((c) => `${c.method} ${c.status}`),
      ['PATCH 201', 'PATCH 200', 'PATCH 200', 'PATCH 200', 'DELETE 204'],
    );
    assert.deepEqual(app.errors, []);
  } finally {
    await app.close();
  }
});
