// co-wechat-api 3.11 (the real package from npm) through wechatApiFromHub, against a real wxhub dev.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import { createInterface } from 'node:readline';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { HubClient } from '../src/index.js';
import { wechatApiFromHub } from '../src/co-wechat-api.js';
import { startDev } from './dev.js';

const API = createRequire(import.meta.url)('co-wechat-api');
const WORKER = fileURLToPath(new URL('./worker.js', import.meta.url));

function withDev(name, fn) {
  test(name, { timeout: 90_000 }, async () => {
    const dev = await startDev();
    try {
      await fn(dev);
    } finally {
      await dev.stop();
    }
  });
}

const wechat = (dev) => wechatApiFromHub(API, new HubClient(dev.hub, dev.clientKey, dev.appid), { apiBase: dev.sim });

withDev("co-wechat-api calls reach the platform with the hub's token", async (dev) => {
  const api = wechat(dev);
  const alice = await dev.openid('alice');
  const followers = await api.getFollowers();
  assert.ok(followers.data.openid.includes(alice));
  const user = await api.getUser({ openid: alice, lang: 'zh_CN' });
  assert.equal(user.openid, alice);
  assert.equal(user.subscribe, 1);
  const stats = await dev.simStats();
  // The simulator attributes a call through its access_token: the hub's.
  assert.equal(stats.calls['/cgi-bin/user/get'], 1);
  assert.equal(stats.calls['/cgi-bin/user/info'], 1);
  assert.equal(stats.calls['/cgi-bin/token'], undefined, 'the SDK never fetched a token');
  assert.equal(await dev.tokensIssued(), 1);
  assert.equal(await dev.requestsTo('access_token'), 1);
});

withDev('a rejected token is reported once and the call still succeeds', async (dev) => {
  const api = wechat(dev);
  await api.ensureAccessToken();
  const before = await dev.simStats();
  await dev.armFault({ endpoint: '/cgi-bin/user/get', count: 1, errcode: 40001 });
  const followers = await api.getFollowers();
  assert.ok(followers.data.openid.includes(await dev.openid('alice')));
  const after = await dev.simStats();
  assert.equal(after.faults_fired - before.faults_fired, 1);
  assert.equal(await dev.requestsTo('access_token/invalidate'), 1);
  assert.ok((await dev.tokensIssued()) - 1 <= 1, 'at most one refresh');
  assert.ok(after.force_refreshes - before.force_refreshes <= 1);
  assert.equal(after.tokens_issued.classic, 0, 'nothing called /cgi-bin/token');
});

withDev("a second token error throws the SDK's error, once", async (dev) => {
  const api = wechat(dev);
  await dev.armFault({ endpoint: '/cgi-bin/user/get', count: 3, errcode: 40014 });
  await assert.rejects(api.getFollowers(), (e) => e.name === 'WeChatAPIError' && e.code === 40014);
  assert.equal((await dev.simStats()).calls['/cgi-bin/user/get'], 2, 'one call and one retry');
  assert.equal(await dev.requestsTo('access_token/invalidate'), 1);
});

withDev('the token never shows in an error message', async (dev) => {
  const api = wechat(dev);
  const token = await api.ensureAccessToken();
  await dev.armFault({ endpoint: '/cgi-bin/user/get', count: 1, http_status: 502 });
  await assert.rejects(api.getFollowers(), (e) => /status code: 502/.test(e.message) && !e.message.includes(token.accessToken));
});

withDev('JS-SDK config is signed with the hub\'s ticket', async (dev) => {
  const api = wechat(dev);
  const hubTicket = await new HubClient(dev.hub, dev.clientKey, dev.appid).jsapiTicket();
  const url = 'http://127.0.0.1/page?x=1';
  const cfg = await api.getJsConfig({ url, jsApiList: ['chooseImage'] });
  const signed = `jsapi_ticket=${hubTicket}&noncestr=${cfg.nonceStr}&timestamp=${cfg.timestamp}&url=${url}`;
  assert.equal(cfg.signature, createHash('sha1').update(signed).digest('hex'));
  assert.equal((await api.getLatestTicket()).ticket, hubTicket);
  assert.equal((await dev.simStats()).tickets_issued.jsapi, 1, 'only the hub fetched a ticket');
});

withDev('bad arguments are refused clearly', async (dev) => {
  const hub = new HubClient(dev.hub, dev.clientKey, dev.appid);
  assert.throws(() => wechatApiFromHub({}, hub), /co-wechat-api/);
  assert.throws(() => wechatApiFromHub(API, {}), /HubClient/);
  assert.throws(() => wechatApiFromHub(API, hub, { apiBase: 'localhost:9780' }), /apiBase/);
});

async function runWorkers(dev, n, { prefetch, between }) {
  const args = [WORKER, dev.hub, dev.appid, dev.sim, ...(prefetch ? ['--prefetch'] : [])];
  const env = { ...process.env, WXHUB_CLIENT_KEY: dev.clientKey };
  const procs = Array.from({ length: n }, () => spawn(process.execPath, args, { env, stdio: ['pipe', 'pipe', 'inherit'] }));
  try {
    const outputs = procs.map((p) => {
      const lines = createInterface({ input: p.stdout });
      const seen = [];
      const waiters = [];
      lines.on('line', (l) => (waiters.length ? waiters.shift()(l) : seen.push(l)));
      return () => (seen.length ? Promise.resolve(seen.shift()) : new Promise((ok) => waiters.push(ok)));
    });
    for (const next of outputs) assert.equal(await next(), 'ready');
    if (between) await between();
    for (const p of procs) p.stdin.end('go\n');
    return await Promise.all(outputs.map(async (next) => JSON.parse(await next())));
  } finally {
    for (const p of procs) if (p.exitCode === null) p.kill();
  }
}

withDev('eight processes at once cause one upstream fetch in all', async (dev) => {
  const results = await runWorkers(dev, 8, { prefetch: false });
  assert.ok(results.every((r) => !r.error && r.total >= 1 && r.reports === 0), JSON.stringify(results));
  assert.equal(await dev.tokensIssued(), 1, "the hub's one fetch at start; eight cold processes added none");
  assert.equal(await dev.requestsTo('access_token'), 8);
  assert.equal((await dev.simStats()).calls['/cgi-bin/user/get'], 8);
});

withDev('eight processes report a killed token once each and the hub refreshes once', async (dev) => {
  let refreshesBefore = null;
  const results = await runWorkers(dev, 8, {
    prefetch: true,
    between: async () => {
      // Every worker holds the hub's token now: the hub's own fetch is done.
      refreshesBefore = await dev.metric('wxhub_refresh_total', { kind: 'access_token' });
      await dev.killTokenElsewhere();
    },
  });
  assert.ok(results.every((r) => !r.error && r.reports === 1), JSON.stringify(results));
  // 200s only: a hub that rate-limits invalidate per client may answer some with 429 first,
  // which the client waits out (Retry-After) and repeats; each process still reports once.
  assert.equal(await dev.requestsTo('access_token/invalidate', '200'), 8);
  assert.ok((await dev.metric('wxhub_refresh_total', { kind: 'access_token' })) - refreshesBefore <= 1);
  assert.equal((await dev.simStats()).calls['/cgi-bin/user/get'], 16, 'eight failed calls, eight retries');
});
