// Compiled by `npm run typecheck` (tsc --noEmit): the declarations describe
// the API as a TypeScript user calls it.
import { HubClient, HubError, TOKEN_ERRCODES, WeChatError, retryAfterSeconds, type JsSdkConfig } from 'wxhub-client';
import { wechatApiFromHub } from 'wxhub-client/co-wechat-api';

class FakeApi {
  constructor(
    readonly appid: string,
    readonly appsecret: string,
  ) {}
  getFollowers(): Promise<{ total: number }> {
    return Promise.resolve({ total: 0 });
  }
}

export async function usage(): Promise<number> {
  const hub = new HubClient('http://127.0.0.1:8780', 'key', 'wx0123456789abcdef', { maxWaitSeconds: 5 });
  const token: string = await hub.accessToken();
  const fresh: string = await hub.invalidate(token);
  const cfg: JsSdkConfig = await hub.jssdkConfig('https://m.example.com/');
  const who = await hub.redeemOAuthTicket('wxt');
  const openid: string = who.openid;
  const followers = await hub.call('GET', '/cgi-bin/user/get', { query: { next_openid: '' } });
  const api = wechatApiFromHub(FakeApi, hub, { apiBase: 'http://127.0.0.1:9780' });
  const total: number = (await api.getFollowers()).total;
  try {
    await hub.proxy('GET', '/cgi-bin/user/get');
  } catch (e) {
    if (e instanceof HubError && e.retryAfter !== null) return e.retryAfter;
    if (e instanceof WeChatError && TOKEN_ERRCODES.has(e.errcode)) return e.errcode;
  }
  return fresh.length + cfg.timestamp + openid.length + Number(followers.total) + total + (retryAfterSeconds('1') ?? 0);
}
