// co-wechat-api with its token from wxhub.
//
//   import API from 'co-wechat-api';
//   import { HubClient } from 'wxhub-client';
//   import { wechatApiFromHub } from 'wxhub-client/co-wechat-api';
//
//   const hub = new HubClient(process.env.WXHUB_URL, process.env.WXHUB_CLIENT_KEY, 'wx0123456789abcdef');
//   const api = wechatApiFromHub(API, hub);      // was: new API(appid, secret)
//   await api.getFollowers();                     // every co-wechat-api call works unchanged
//
// The SDK's own hooks are used as designed for a central server: getToken
// reads the hub, saveToken stores nothing, and tokenFromCustom = true so the
// SDK never calls /cgi-bin/token with an AppSecret. co-wechat-api then
// throws on 40001 instead of retrying; request() is wrapped to report the
// token it used to the hub and retry exactly once (the SDK's own retry
// fetched a new token up to three times per call, with no compare).

import { HubClient, TOKEN_ERRCODES } from './index.js';

const TOKEN_IN_URL = /([?&]access_token=)([^&#]*)/;

function tokenIn(url) {
  const m = TOKEN_IN_URL.exec(url);
  return m ? decodeURIComponent(m[2]) : null;
}

function withToken(url, token) {
  return url.replace(TOKEN_IN_URL, (_, prefix) => prefix + encodeURIComponent(token));
}

const API_HOST = 'https://api.weixin.qq.com/';

/**
 * A co-wechat-api `API` whose token and JS-SDK tickets come from wxhub.
 * @param {Function} API the class exported by `co-wechat-api`
 * @param {HubClient} hub
 * @param {{apiBase?: string}} [options] `apiBase` points the SDK's api.weixin.qq.com prefixes elsewhere (a simulator).
 */
export function wechatApiFromHub(API, hub, options = {}) {
  if (typeof API !== 'function' || typeof API.prototype?.request !== 'function' || !API.AccessToken) {
    throw new TypeError('API: pass the class exported by co-wechat-api (import API from "co-wechat-api")');
  }
  if (!(hub instanceof HubClient)) {
    throw new TypeError('hub: must be a wxhub-client HubClient');
  }
  const getToken = async () => {
    const c = await hub.accessTokenCredential();
    return { accessToken: c.value, expireTime: c.useUntilMs };
  };
  // Nothing is saved locally: the hub is the only store.
  const saveToken = async () => {};
  const api = new API(hub.appid, '', getToken, saveToken, true);

  if (options.apiBase !== undefined) {
    if (typeof options.apiBase !== 'string' || !/^https?:\/\//.test(options.apiBase)) {
      throw new TypeError('options.apiBase: must be an http:// or https:// URL');
    }
    const base = options.apiBase.replace(/\/+$/, '') + '/';
    for (const key of Object.keys(api)) {
      if (key.endsWith('refix') && typeof api[key] === 'string' && api[key].startsWith(API_HOST)) {
        api[key] = base + api[key].slice(API_HOST.length);
      }
    }
  }

  // The SDK calls this when it has no valid token; with a hub there is
  // always one to ask for, never one to fetch with the AppSecret.
  api.getAccessToken = async () => {
    const t = await getToken();
    return new API.AccessToken(t.accessToken, t.expireTime);
  };

  api.registerTicketHandle(
    async (type = 'jsapi') => {
      const c = await hub.ticketCredential(type);
      return { ticket: c.value, expireTime: c.useUntilMs };
    },
    async () => {},
  );
  api.getTicket = async (type = 'jsapi') => {
    const c = await hub.ticketCredential(type);
    return { ticket: c.value, expireTime: c.useUntilMs };
  };

  const request = API.prototype.request;
  // The SDK puts the whole URL, access_token included, in some messages
  // (a non-2xx status): the token goes no further than here.
  const send = async (self, url, opts) => {
    try {
      return await request.call(self, url, opts, 0);
    } catch (err) {
      const used = tokenIn(url);
      if (used && typeof err?.message === 'string' && err.message.includes(used)) {
        err.message = err.message.split(used).join('[redacted]');
      }
      throw err;
    }
  };
  api.request = async function (url, opts) {
    try {
      return await send(this, url, opts);
    } catch (err) {
      const used = tokenIn(url);
      if (!TOKEN_ERRCODES.has(Number(err?.code)) || !used) throw err;
      const fresh = await hub.invalidate(used);
      return send(this, withToken(url, fresh), opts);
    }
  };
  return api;
}
