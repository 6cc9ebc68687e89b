// A real `wxhub dev` (simulator + hub + demo account) on loopback, per test.
// The binary is $WXHUB_BIN (default target/debug/wxhub at the repository root);
// the keys are the ones the process generates and prints, kept in memory.

import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname, isAbsolute, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');

export function wxhubBin() {
  let bin = process.env.WXHUB_BIN || 'target/debug/wxhub';
  if (!isAbsolute(bin)) bin = resolve(REPO, bin);
  if (!existsSync(bin)) {
    throw new Error(`no wxhub binary at ${bin}: build it (cargo build -p wxhub) or set WXHUB_BIN`);
  }
  return bin;
}

function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.unref();
    s.on('error', fail);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });
}

async function json(method, url, body) {
  const resp = await fetch(url, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!resp.ok) throw new Error(`${method} ${url}: ${resp.status}`);
  return resp.json();
}

class Dev {
  #key;
  constructor(fields, proc) {
    this.hub = fields.hub;
    this.sim = fields.simulator;
    this.demo = fields['demo page'];
    this.appid = fields.account;
    this.#key = fields['client key'];
    this.proc = proc;
  }

  // A getter, not a field: the key stays out of assertion diffs and logs.
  get clientKey() {
    return this.#key;
  }

  async simStats() {
    return (await json('GET', `${this.sim}/_sim/stats`)).apps[this.appid];
  }

  async tokensIssued() {
    const t = (await this.simStats()).tokens_issued;
    return t.stable + t.classic;
  }

  armFault(fault) {
    return json('POST', `${this.sim}/_sim/faults`, fault);
  }

  async openid(person) {
    return (await json('GET', `${this.sim}/_sim/openid?appid=${this.appid}&person=${person}`)).openid;
  }

  /** Forces a new stable token as another system holding the AppSecret would: the hub's token dies at once. */
  async killTokenElsewhere() {
    const world = await json('GET', `${this.sim}/_sim/world`);
    const { secret } = world.accounts.find((a) => a.appid === this.appid);
    const body = await json('POST', `${this.sim}/cgi-bin/stable_token`, {
      grant_type: 'client_credential',
      appid: this.appid,
      secret,
      force_refresh: true,
    });
    if (!body.access_token) throw new Error(`the simulator refused the force refresh: ${body.errcode}`);
  }

  /** Sum of the samples of `name` whose labels include `labels`. */
  async metric(name, labels = {}) {
    const text = await (await fetch(`${this.hub}/metrics`)).text();
    let total = 0;
    for (const line of text.split('\n')) {
      if (!line || line.startsWith('#')) continue;
      const cut = line.lastIndexOf(' ');
      const series = line.slice(0, cut);
      const brace = series.indexOf('{');
      const metric = brace < 0 ? series : series.slice(0, brace);
      if (metric !== name) continue;
      // Values may hold braces (route="/v1/apps/{appid}/..."): read quoted values.
      const got = Object.fromEntries([...series.slice(brace + 1).matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((m) => [m[1], m[2]]));
      if (Object.entries(labels).every(([k, v]) => got[k] === v)) total += Number(line.slice(cut + 1));
    }
    return total;
  }

  /** wxhub_http_requests_total of client "dev" on /v1/apps/{appid}/<tail>. */
  requestsTo(tail, status) {
    const labels = { client: 'dev', route: `/v1/apps/{appid}/${tail}` };
    if (status !== undefined) labels.status = status;
    return this.metric('wxhub_http_requests_total', labels);
  }

  async stop() {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    const exited = new Promise((ok) => this.proc.once('exit', ok));
    // SIGINT is what wxhub dev waits for: it shuts down and removes its store.
    this.proc.kill('SIGINT');
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
  }
}

async function startOnce(bin) {
  const [hubPort, simPort, demoPort] = [await freePort(), await freePort(), await freePort()];
  const proc = spawn(
    bin,
    ['dev', '--listen', `127.0.0.1:${hubPort}`, '--sim-listen', `127.0.0.1:${simPort}`, '--demo-listen', `127.0.0.1:${demoPort}`],
    { stdio: ['ignore', 'pipe', 'ignore'], env: { ...process.env, RUST_LOG: 'warn' } },
  );
  const fields = {};
  const lines = createInterface({ input: proc.stdout });
  const ready = await new Promise((ok) => {
    const timer = setTimeout(() => ok(false), 30_000);
    proc.once('exit', () => ok(false));
    lines.on('line', (line) => {
      const m = /^\s+(account|client key|hub|simulator|demo page)\s+(\S+)/.exec(line);
      if (m) fields[m[1]] = m[2];
      if (line.startsWith('listening on ')) {
        clearTimeout(timer);
        ok(true);
      }
    });
  });
  const dev = new Dev(fields, proc);
  if (ready && ['account', 'client key', 'hub', 'simulator', 'demo page'].every((k) => fields[k])) return dev;
  await dev.stop();
  return null;
}

export async function startDev() {
  const bin = wxhubBin();
  // A port picked free can be taken before the process binds it: try again.
  for (let i = 0; i < 3; i++) {
    const dev = await startOnce(bin);
    if (dev) return dev;
  }
  throw new Error('wxhub dev did not print its addresses and keys');
}
