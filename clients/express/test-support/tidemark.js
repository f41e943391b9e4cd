'use strict';

// Starts a real tidemark for a test file: free loopback ports, a temporary data directory,
// waits for /healthz, and stops it (and removes the directory) afterwards.

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const PACKAGE_DIR = path.resolve(__dirname, '..');
const REPO_DIR = path.resolve(PACKAGE_DIR, '..', '..');

/** The tidemark binary: $TIDEMARK_BIN, else $CARGO_TARGET_DIR/debug/tidemark, else ../../target/debug/tidemark. */
function binaryPath() {
  if (process.env.TIDEMARK_BIN) return path.resolve(process.env.TIDEMARK_BIN);
  if (process.env.CARGO_TARGET_DIR) {
    // cargo resolves a relative CARGO_TARGET_DIR against where it runs: the checkout.
    return path.resolve(REPO_DIR, process.env.CARGO_TARGET_DIR, 'debug', 'tidemark');
  }
  return path.join(REPO_DIR, 'target', 'debug', 'tidemark');
}

function requireBinary() {
  const bin = binaryPath();
  try {
    fs.accessSync(bin, fs.constants.X_OK);
  } catch (_) {
    throw new Error(
      `tidemark binary not found or not executable at ${bin}. Build it (cargo build --locked in the ` +
        'repository root) or point TIDEMARK_BIN at it, e.g. TIDEMARK_BIN=/path/to/target/debug/tidemark npm test',
    );
  }
  return bin;
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Starts tidemark. Resolves { url, token, stop() }. Retries with new ports (at most 5 times)
 * when a port was taken in between; gives up after 15 s of waiting for /healthz.
 */
async function startTidemark({ token } = {}) {
  const bin = requireBinary();
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tidemark-express-'));
  let lastOutput = '';
  for (let attempt = 0; attempt < 5; attempt++) {
    const httpPort = await freePort();
    const tyrantPort = await freePort();
    const args = [
      'serve',
      '--data-dir', dataDir,
      '--http-addr', `127.0.0.1:${httpPort}`,
      '--tyrant-addr', `127.0.0.1:${tyrantPort}`,
      '--max-future-skew', '0',
    ];
    // Only the settings given here: none of the caller's TIDEMARK_* (a database URL, a token…).
    const env = {};
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('TIDEMARK_')) env[k] = v;
    env.TIDEMARK_LOG = process.env.TIDEMARK_LOG || 'warn';
    if (token) env.TIDEMARK_AUTH_TOKEN = token;
    const child = spawn(bin, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d) => { output += d; });
    child.stderr.on('data', (d) => { output += d; });
    let exited = null;
    child.on('exit', (code, signal) => { exited = { code, signal }; });
    child.on('error', (err) => { exited = { code: null, signal: null, err }; });
    const url = `http://127.0.0.1:${httpPort}`;

    const deadline = Date.now() + 15000;
    let healthy = false;
    while (Date.now() < deadline && !exited) {
      try {
        const res = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(1000) });
        await res.arrayBuffer();
        if (res.status === 200) {
          healthy = true;
          break;
        }
      } catch (_) {
        // not listening yet
      }
      await sleep(50);
    }
    if (healthy) {
      const stop = async () => {
        if (!exited) {
          const gone = new Promise((r) => child.once('exit', r));
          child.kill('SIGKILL');
          let timer;
          await Promise.race([gone, new Promise((r) => { timer = setTimeout(r, 5000); })]);
          clearTimeout(timer);
        }
        fs.rmSync(dataDir, { recursive: true, force: true });
      };
      return { url, token, stop, output: () => output };
    }
    if (!exited) {
      child.kill('SIGKILL');
      await new Promise((r) => child.once('exit', r));
    }
    lastOutput = output;
    if (!/in use|EADDRINUSE|address already/i.test(output)) break;
  }
  fs.rmSync(dataDir, { recursive: true, force: true });
  throw new Error(`tidemark (${bin}) did not become healthy:\n${lastOutput.slice(-2000)}`);
}

module.exports = { startTidemark, binaryPath, sleep };
