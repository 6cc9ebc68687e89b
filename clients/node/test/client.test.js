// HubClient against a real wxhub dev: the hub's token, one report, one retry, Retry-After.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { test } from 'node:test';
import { inspect } from 'node:util';
import { HubClient, HubError, WeChatError, retryAfterSeconds } from '../src/index.js';
import { startDev } from './dev.js';

function withDev(name, fn) {
  test(name, { timeout: 60_000 }, async () => {
    const dev = await startDev();
    try {
      await fn(dev);
    } finally {
      await dev.stop();
    }
  });
}

const client = (dev, options) => new HubClient(dev.hub, dev.clientKey, dev.appid, options);

withDev('the token comes from the hub and is cached', async (dev) => {
  const hub = client(dev);
  const [a, b, c] = await Promise.all([hub.accessTokenCredential(), hub.accessToken(), hub.accessToken()]);
  assert.equal(b, a.value);
  assert.equal(c, a.value);
  assert.ok(a.expiresIn > 7000 && a.expiresIn <= 7200);
  assert.equal(await hub.accessToken(), a.value);
  assert.equal(await dev.requestsTo('access_token'), 1, 'concurrent and later reads shared one request');
  assert.equal(await dev.tokensIssued(), 1, "the hub's own fetch, nothing else");
});

withDev('a rejected token is reported once and the call retried once', async (dev) => {
  const hub = client(dev);
  await hub.accessToken();
  const before = await dev.simStats();
  await dev.armFault({ endpoint: '/cgi-bin/user/get', count: 1, errcode: 40001 });
  const followers = await hub.call('GET', '/cgi-bin/user/get', { apiBase: dev.sim });
  assert.ok(followers.total >= 1);
  const after = await dev.simStats();
  assert.equal(after.faults_fired - before.faults_fired, 1);
  assert.equal(after.calls['/cgi-bin/user/get'], 2);
  assert.equal(await dev.requestsTo('access_token/invalidate'), 1);
  assert.ok((await dev.tokensIssued()) - 1 <= 1, 'at most one refresh');
  assert.ok(after.force_refreshes - before.force_refreshes <= 1);
});

withDev('a second token error is thrown, not looped on', async (dev) => {
  const hub = client(dev);
  await dev.armFault({ endpoint: '/cgi-bin/user/get', count: 5, errcode: 40001 });
  await assert.rejects(hub.call('GET', '/cgi-bin/user/get', { apiBase: dev.sim }), (e) => e instanceof WeChatError && e.errcode === 40001);
  assert.equal((await dev.simStats()).calls['/cgi-bin/user/get'], 2);
  assert.equal(await dev.requestsTo('access_token/invalidate'), 1);
});

withDev('concurrent reports of one token reach the hub once', async (dev) => {
  const hub = client(dev);
  const dead = await hub.accessToken();
  await dev.killTokenElsewhere();
  const answers = await Promise.all(Array.from({ length: 5 }, () => hub.invalidate(dead)));
  assert.equal(new Set(answers).size, 1);
  assert.notEqual(answers[0], dead);
  assert.equal(await dev.requestsTo('access_token/invalidate'), 1);
  const followers = await hub.call('GET', '/cgi-bin/user/get', { apiBase: dev.sim });
  assert.ok(followers.total >= 1, 'the answer works on the platform');
});

withDev('503 with Retry-After is waited out', async (dev) => {
  const hub = client(dev, { maxWaitSeconds: 10, maxAttempts: 4 });
  await hub.accessToken();
  await dev.killTokenElsewhere();
  // The platform is busy when the hub must replace the dead token.
  await dev.armFault({ endpoint: '/cgi-bin/stable_token', count: 1, errcode: -1 });
  const started = performance.now();
  const followers = await hub.call('GET', '/cgi-bin/user/get', { apiBase: dev.sim });
  assert.ok(followers.total >= 1);
  assert.ok((await dev.requestsTo('access_token/invalidate', '503')) >= 1);
  assert.equal(await dev.requestsTo('access_token/invalidate', '200'), 1);
  assert.ok(performance.now() - started >= 1000, 'Retry-After was honoured');
});

withDev('a Retry-After longer than allowed is thrown at once', async (dev) => {
  const hub = client(dev, { maxWaitSeconds: 0.5 });
  await hub.accessToken();
  await dev.killTokenElsewhere();
  await dev.armFault({ endpoint: '/cgi-bin/stable_token', count: 1, errcode: -1 });
  const started = performance.now();
  await assert.rejects(
    hub.call('GET', '/cgi-bin/user/get', { apiBase: dev.sim }),
    (e) => e instanceof HubError && e.status === 503 && e.retryAfter >= 1 && !e.message.includes(dev.clientKey),
  );
  assert.ok(performance.now() - started < 1000);
  assert.equal(await dev.requestsTo('access_token/invalidate'), 1);
});

withDev('tickets and the JS-SDK signature', async (dev) => {
  const hub = client(dev);
  const ticket = await hub.jsapiTicket();
  assert.equal(await hub.ticket('jsapi'), ticket);
  assert.equal(await dev.requestsTo('jsapi_ticket'), 1);
  const cfg = await hub.jssdkConfig('http://127.0.0.1/page?x=1#frag');
  assert.equal(cfg.appId, dev.appid);
  const signed = `jsapi_ticket=${ticket}&noncestr=${cfg.nonceStr}&timestamp=${cfg.timestamp}&url=http://127.0.0.1/page?x=1`;
  assert.equal(cfg.signature, createHash('sha1').update(signed).digest('hex'));
  await assert.rejects(hub.jssdkConfig('https://evil.example/'), (e) => e instanceof HubError && e.status === 403 && e.code === 'forbidden');
  await assert.rejects(hub.wxCardTicket(), (e) => e instanceof HubError && e.status === 404);
  const issued = (await dev.simStats()).tickets_issued.jsapi;
  assert.equal(await hub.invalidateTicket('jsapi', 'not-the-current-ticket'), ticket);
  assert.equal((await dev.simStats()).tickets_issued.jsapi, issued);
});

withDev('an OAuth ticket is redeemed once', async (dev) => {
  const hub = client(dev);
  const returnTo = `${dev.demo}/welcome`;
  let url = `${dev.hub}/oauth/${dev.appid}/authorize?` + new URLSearchParams({ scope: 'base', return_to: returnTo });
  let ticket = null;
  for (let i = 0; i < 10 && !ticket; i++) {
    if (url.startsWith(`${dev.sim}/connect/oauth2/authorize`)) {
      // The simulator takes the person from the query; the fragment never reaches a server.
      const u = new URL(url);
      u.hash = '';
      u.searchParams.set('wxsim_person', 'bob');
      url = u.toString();
    }
    const resp = await fetch(url, { redirect: 'manual' });
    assert.equal(resp.status, 302);
    url = resp.headers.get('location');
    if (url.startsWith(returnTo)) ticket = new URL(url).searchParams.get('wxhub_ticket');
  }
  assert.ok(ticket, 'the hub sent the person back with a wxhub_ticket');
  const result = await hub.redeemOAuthTicket(ticket);
  assert.equal(result.appid, dev.appid);
  assert.equal(result.openid, await dev.openid('bob'));
  assert.equal(result.scope, 'snsapi_base');
  await assert.rejects(hub.redeemOAuthTicket(ticket), (e) => e instanceof HubError && e.status === 404);
});

withDev('the proxy injects the token', async (dev) => {
  const followers = await client(dev).proxy('GET', '/cgi-bin/user/get');
  assert.ok(followers.data.openid.includes(await dev.openid('alice')));
  assert.equal(await dev.tokensIssued(), 1);
});

withDev('bad input gets a clear error and the key stays hidden', async (dev) => {
  assert.throws(() => new HubClient('127.0.0.1:8780', dev.clientKey, dev.appid), /hubUrl/);
  assert.throws(() => new HubClient(dev.hub, ' ', dev.appid), /clientKey/);
  assert.throws(() => new HubClient(dev.hub, dev.clientKey, 'wx/../x'), /appid/);
  const hub = client(dev);
  assert.ok(!inspect(hub).includes(dev.clientKey));
  assert.ok(!JSON.stringify(hub).includes(dev.clientKey));
  await assert.rejects(hub.call('GET', 'cgi-bin/user/get'), /path/);
  await assert.rejects(hub.invalidate(''), /access_token/);
  await assert.rejects(
    new HubClient(dev.hub, 'wxh_not-a-key', dev.appid).accessToken(),
    (e) => e instanceof HubError && e.status === 401 && e.code === 'unauthorized',
  );
  await assert.rejects(new HubClient(dev.hub, dev.clientKey, 'wx0000000000000000').accessToken(), (e) => e instanceof HubError && e.status === 404);
});

test('Retry-After is read as seconds or an HTTP date', () => {
  assert.equal(retryAfterSeconds('3'), 3);
  assert.equal(retryAfterSeconds(' 0 '), 0);
  assert.equal(retryAfterSeconds(new Date(1_000_005_000).toUTCString(), 1_000_000_000), 5);
  assert.equal(retryAfterSeconds(new Date(999_000_000).toUTCString(), 1_000_000_000), 0);
  assert.equal(retryAfterSeconds('soon'), null);
  assert.equal(retryAfterSeconds('-1'), null);
  assert.equal(retryAfterSeconds('2025'), 2025);
  assert.equal(retryAfterSeconds(null), null);
});
