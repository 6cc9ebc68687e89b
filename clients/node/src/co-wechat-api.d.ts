import type { HubClient } from './index.js';

export interface WechatApiFromHubOptions {
  /** Replaces `https://api.weixin.qq.com/` in the SDK's URL prefixes (e.g. a wxhub simulator). */
  apiBase?: string;
}

/**
 * A co-wechat-api `API` instance whose token and JS-SDK tickets come from wxhub: `getToken` reads
 * the hub, `saveToken` stores nothing, the SDK never fetches a token itself, and a call that gets
 * 40001/40014/42001 reports the token to the hub and is retried once.
 */
export declare function wechatApiFromHub<T extends object>(
  API: new (
    appid: string,
    appsecret: string,
    getToken?: () => Promise<unknown>,
    saveToken?: (token: unknown) => Promise<void>,
    tokenFromCustom?: boolean,
  ) => T,
  hub: HubClient,
  options?: WechatApiFromHubOptions,
): T;
