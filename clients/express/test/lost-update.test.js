'use strict';

// Two overlapping requests of one session change different fields. Order, made
// deterministic with gates: A loads, B loads, A saves, B saves.
// A whole-session store (connect-redis's behaviour) loses A's field; TidemarkStore keeps both.

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

/** Logs in, then runs the two overlapping requests; resolves the session's fields afterwards. */
async function overlap(app) {
  const client = new Client(app.url);
  const login = await client.post('/login?user=alice');
  assert.equal(login.status, 200);

  const a = client.post('/change?field=a&value=from-A&gate=A');
  await app.gate('A').arrived.promise; // A has loaded the session
  const b = client.post('/change?field=b&value=from-B&gate=B');
  await app.gate('B').arrived.promise; // B has loaded the same session
  app.gate('A').release.resolve();
  assert.equal((await a).status, 200); // A has saved (the response ends after the save)
  app.gate('B').release.resolve();
  assert.equal((await b).status, 200); // B has saved

  const after = await client.get('/whoami');
  assert.equal(after.status, 200);
  assert.equal(after.body.sid, login.body.sid, 'still the same session');
  return after.body;
}

test('a whole-session store loses one of two overlapping updates', async () => {
  const store = new WholeSessionStore({ url: tidemark.url, token: TOKEN, prefix: 'whole:' });
  const app = await startApp(store);
  try {
    const result = await overlap(app);
    assert.equal(result.userId, 'alice');
    assert.equal(result.fields.b, 'from-B', "B's field is there");
    assert.equal(result.fields.a, undefined, "A's field was lost: B wrote back the session it had loaded before A saved");
    assert.deepEqual(app.errors, []);
  } finally {
    await app.close();
  }
});

test('TidemarkStore keeps both overlapping updates', async () => {
  const fetch = recordingFetch();
  const store = new TidemarkStore({ url: tidemark.url, token: TOKEN, prefix: 'sess:', ownerOf: (s) => s.userId, fetch });
  const app = await startApp(store);
  try {
    const result = await overlap(app);
    assert.equal(result.userId, 'alice');
    assert.equal(result.fields.a, 'from-A', "A's field survived");
    assert.equal(result.fields.b, 'from-B', "B's field survived");
    assert.deepEqual(app.errors, []);
    const patches = fetch.log.filter((c) => c.method === 'PATCH');
    assert.deepEqual(patches.map((c) => c.status), [201, 200, 200], 'login created the document; A and B patched it');
  } finally {
    await app.close();
  }
});
