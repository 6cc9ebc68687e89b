// One business-server process using co-wechat-api through wechatApiFromHub.
// Started by co-wechat-api.test.js, several at once. The client key comes
// from WXHUB_CLIENT_KEY (argv is visible to every user of the machine).
//
//   node worker.js HUB_URL APPID SIM_URL [--prefetch]
//
// Prints "ready" once its API exists (with --prefetch: once it holds the
// hub's token), waits for a line on stdin, calls api.getFollowers() and
// prints one JSON line: {"total": n, "reports": k} or {"error": "..."}.

import { createRequire } from 'node:module';
import { createInterface } from 'node:readline';
import { HubClient } from '../src/index.js';
import { wechatApiFromHub } from '../src/co-wechat-api.js';

const API = createRequire(import.meta.url)('co-wechat-api');
const [hubUrl, appid, sim] = process.argv.slice(2, 5);
const hub = new HubClient(hubUrl, process.env.WXHUB_CLIENT_KEY ?? '', appid);
let reports = 0;
const report = hub.invalidate.bind(hub);
hub.invalidate = (failed) => {
  reports += 1;
  return report(failed);
};
const api = wechatApiFromHub(API, hub, { apiBase: sim });
if (process.argv.includes('--prefetch')) await hub.accessToken();
console.log('ready');
const lines = createInterface({ input: process.stdin });
await new Promise((ok) => lines.once('line', ok));
lines.close();
try {
  const followers = await api.getFollowers();
  console.log(JSON.stringify({ total: followers.total, reports }));
} catch (e) {
  console.log(JSON.stringify({ error: `${e.name}: ${e.message}`, reports }));
}
