// A client for business servers that get WeChat Official Account credentials
// from wxhub. No dependency beyond Node's own fetch (Node 18+).

/** The errcodes that mean "this access token is not (or no longer) good". */
export const TOKEN_ERRCODES = new Set([40001, 40014, 42001]);

const TICKET_KINDS = new Set(['jsapi', 'wx_card']);

/** The hub answered with an error (`{"error": {"code", "message"}}`). */
export class HubError extends Error {
  constructor(status, code, message, retryAfter = null) {
    super(`wxhub ${status} ${code}: ${message}` + (retryAfter == null ? '' : ` (retry after ${retryAfter} s)`));
    this.name = 'HubError';
    this.status = status;
    this.code = code;
    this.hubMessage = message;
    this.retryAfter = retryAfter;
  }
}

/** The hub could not be reached, or did not answer JSON. */
export class HubUnreachable extends Error {
  constructor(message) {
    super(message);
    this.name = 'HubUnreachable';
  }
}

/** The platform answered a non-zero errcode (after the one retry, for token errors). */
export class WeChatError extends Error {
  constructor(errcode, errmsg) {
    super(`WeChat errcode ${errcode}: ${errmsg}`);
    this.name = 'WeChatError';
    this.errcode = errcode;
    this.errmsg = errmsg;
  }
}

/**
 * Parses `Retry-After`: delta-seconds or an HTTP date; null if absent or unreadable.
 * @param {string | null | undefined} value
 * @param {number} [nowMs]
 */
export function retryAfterSeconds(value, nowMs = Date.now()) {
  if (value == null) return null;
  const v = String(value).trim();
  if (/^\d+$/.test(v)) return Number(v);
  // Only an HTTP date (it names a weekday and GMT); Date.parse reads far too much else.
  if (!/^[A-Za-z]{3}, .+ GMT$/.test(v)) return null;
  const when = Date.parse(v);
  if (Number.isNaN(when)) return null;
  return Math.max(0, (when - nowMs) / 1000);
}

function errcodeOf(body) {
  if (body === null || typeof body !== 'object') return 0;
  const n = Number(body.errcode ?? 0);
  return Number.isFinite(n) ? n : 0;
}

const sleep = (seconds) => new Promise((resolve) => setTimeout(resolve, seconds * 1000));

/**
 * A client for one account (AppID) on one wxhub.
 *
 * Tokens and tickets are cached until `marginSeconds` before they expire
 * (counted from when the answer arrived, so a wrong wall clock does not
 * matter); concurrent callers share one request to the hub. Answers 429 and
 * 503 whose `Retry-After` is at most `maxWaitSeconds` are retried after it,
 * `maxAttempts` times in all; a longer wait is thrown at once as a HubError
 * with `retryAfter` set.
 */
export class HubClient {
  #key;
  #fetch;
  #sleep;
  #cache = new Map();
  #inflight = new Map();

  constructor(hubUrl, clientKey, appid, options = {}) {
    if (typeof hubUrl !== 'string' || !/^https?:\/\//.test(hubUrl)) {
      throw new TypeError('hubUrl: must be an http:// or https:// URL, e.g. http://127.0.0.1:8780');
    }
    if (typeof clientKey !== 'string' || !clientKey.trim()) {
      throw new TypeError('clientKey: empty; give the key `wxhub key` made for this client');
    }
    if (typeof appid !== 'string' || !appid || /[/?#%\s]/.test(appid)) {
      throw new TypeError('appid: must be an AppID such as wx0123456789abcdef');
    }
    const {
      timeoutMs = 10_000,
      marginSeconds = 10,
      maxWaitSeconds = 10,
      maxAttempts = 3,
      fetch: fetchImpl = globalThis.fetch,
      sleep: sleepImpl = sleep,
    } = options;
    if (!(timeoutMs > 0) || !(marginSeconds >= 0) || !(maxWaitSeconds >= 0) || !(maxAttempts >= 1)) {
      throw new TypeError('options: timeoutMs must be positive, maxAttempts at least 1, the others not negative');
    }
    if (typeof fetchImpl !== 'function') {
      throw new TypeError('options.fetch: no fetch; Node 18 or later has one built in');
    }
    this.hubUrl = hubUrl.replace(/\/+$/, '');
    this.appid = appid;
    this.timeoutMs = timeoutMs;
    this.marginSeconds = marginSeconds;
    this.maxWaitSeconds = maxWaitSeconds;
    this.maxAttempts = maxAttempts;
    this.#key = clientKey.trim();
    this.#fetch = fetchImpl;
    this.#sleep = sleepImpl;
  }

  // The key lives in a private field: console.log, util.inspect and
  // JSON.stringify never show it.
  toJSON() {
    return { hubUrl: this.hubUrl, appid: this.appid };
  }

  [Symbol.for('nodejs.util.inspect.custom')]() {
    return `HubClient { hubUrl: '${this.hubUrl}', appid: '${this.appid}', clientKey: [redacted] }`;
  }

  #app(tail) {
    return `/v1/apps/${encodeURIComponent(this.appid)}/${tail}`;
  }

  /** One request to the hub with the bounded Retry-After policy; throws on >= 400. */
  async #hub(method, url, body) {
    for (let attempt = 1; ; attempt++) {
      let resp;
      try {
        resp = await this.#fetch(url, {
          method,
          headers: {
            authorization: `Bearer ${this.#key}`,
            accept: 'application/json',
            ...(body === undefined ? {} : { 'content-type': 'application/json' }),
          },
          body: body === undefined ? undefined : JSON.stringify(body),
          redirect: 'manual',
          signal: AbortSignal.timeout(this.timeoutMs),
        });
      } catch (e) {
        // The URL holds no secret (the key is a header); the cause is kept for debugging.
        throw new HubUnreachable(`wxhub at ${this.hubUrl}: ${e?.cause?.code ?? e?.name ?? e}`);
      }
      if (resp.status === 429 || resp.status === 503) {
        const delay = retryAfterSeconds(resp.headers.get('retry-after'));
        if (delay !== null && delay <= this.maxWaitSeconds && attempt < this.maxAttempts) {
          await resp.body?.cancel();
          await this.#sleep(delay);
          continue;
        }
        throw await HubClient.#error(resp, delay);
      }
      if (resp.status >= 400) throw await HubClient.#error(resp, null);
      return resp;
    }
  }

  static async #error(resp, retryAfter) {
    let code = '';
    let message = resp.statusText || '';
    try {
      const err = (await resp.json())?.error ?? {};
      code = String(err.code ?? '');
      message = String(err.message ?? message);
    } catch {
      // not the hub's JSON error: keep the status line
    }
    return new HubError(resp.status, code || `http_${resp.status}`, message, retryAfter);
  }

  async #json(resp) {
    let data;
    try {
      data = await resp.json();
    } catch {
      throw new HubUnreachable(`wxhub at ${this.hubUrl} answered ${resp.status} without JSON`);
    }
    if (data === null || typeof data !== 'object' || Array.isArray(data)) {
      throw new HubUnreachable(`wxhub at ${this.hubUrl} answered JSON that is not an object`);
    }
    return data;
  }

  async #send(method, path, body) {
    return this.#json(await this.#hub(method, this.hubUrl + path, body));
  }

  #remember(kind, body) {
    const value = body[kind];
    const expiresAt = Number(body.expires_at);
    const expiresIn = Number(body.expires_in);
    if (typeof value !== 'string' || !Number.isFinite(expiresAt) || !Number.isFinite(expiresIn)) {
      throw new HubUnreachable(`wxhub's answer has no ${kind} with expires_at and expires_in`);
    }
    const useUntil = performance.now() + (expiresIn - this.marginSeconds) * 1000;
    const cred = { value, expiresAt, expiresIn, useUntilMs: Date.now() + (expiresIn - this.marginSeconds) * 1000 };
    this.#cache.set(kind, { cred, useUntil });
    return cred;
  }

  #fresh(kind) {
    const c = this.#cache.get(kind);
    return c && performance.now() < c.useUntil ? c.cred : null;
  }

  // One request per kind at a time: concurrent callers await the same promise.
  #single(kind, task) {
    const pending = this.#inflight.get(kind);
    if (pending) return pending;
    const p = task().finally(() => this.#inflight.delete(kind));
    this.#inflight.set(kind, p);
    return p;
  }

  async #get(kind) {
    const cred = this.#fresh(kind);
    if (cred) return cred;
    return this.#single(kind, async () => this.#fresh(kind) ?? this.#remember(kind, await this.#send('GET', this.#app(kind))));
  }

  async #invalidate(kind, field, failed) {
    if (typeof failed !== 'string' || !failed) {
      throw new TypeError(`${field}: the value the platform rejected is required`);
    }
    const pending = this.#inflight.get(kind);
    if (pending) await pending.catch(() => {});
    // Another caller already reported this value and got a new one: that
    // one is the answer, and the hub need not hear it twice.
    const cached = this.#fresh(kind);
    if (cached && cached.value !== failed) return cached;
    this.#cache.delete(kind);
    return this.#single(kind, async () =>
      this.#remember(kind, await this.#send('POST', this.#app(`${kind}/invalidate`), { [field]: failed })),
    );
  }

  /** The access token with its expiry: `{value, expiresAt, expiresIn, useUntilMs}`. */
  accessTokenCredential() {
    return this.#get('access_token');
  }

  /** The access token: cached, asked from the hub when due. */
  async accessToken() {
    return (await this.#get('access_token')).value;
  }

  /**
   * Reports a token the platform rejected (40001, 40014, 42001); resolves to the token to use now.
   * The hub refreshes once however many report it, or confirms the token
   * still works and answers it again: use the answer, retry once, never loop.
   */
  async invalidate(failedToken) {
    return (await this.#invalidate('access_token', 'access_token', failedToken)).value;
  }

  /** A JS-SDK ticket (`jsapi` or `wx_card`) with its expiry. */
  ticketCredential(kind) {
    if (!TICKET_KINDS.has(kind)) throw new TypeError(`kind: ${kind} is not a ticket kind; use 'jsapi' or 'wx_card'`);
    return this.#get(`${kind}_ticket`);
  }

  async ticket(kind) {
    return (await this.ticketCredential(kind)).value;
  }

  jsapiTicket() {
    return this.ticket('jsapi');
  }

  wxCardTicket() {
    return this.ticket('wx_card');
  }

  /** Reports a ticket the platform rejected; resolves to the ticket to use now. */
  async invalidateTicket(kind, failedTicket) {
    if (!TICKET_KINDS.has(kind)) throw new TypeError(`kind: ${kind} is not a ticket kind; use 'jsapi' or 'wx_card'`);
    return (await this.#invalidate(`${kind}_ticket`, 'ticket', failedTicket)).value;
  }

  /** `{appId, timestamp, nonceStr, signature}` for `wx.config` on the page at `url`. */
  async jssdkConfig(url) {
    if (typeof url !== 'string' || !/^https?:\/\//.test(url)) {
      throw new TypeError("url: must be the page's absolute http(s) URL");
    }
    const b = await this.#send('POST', this.#app('jssdk/config'), { url });
    return { appId: String(b.appId), timestamp: Number(b.timestamp), nonceStr: String(b.nonceStr), signature: String(b.signature) };
  }

  /** Redeems the `wxhub_ticket` a person came back with (single-use: a second redeem is a 404 HubError). */
  async redeemOAuthTicket(ticket) {
    if (typeof ticket !== 'string' || !ticket) {
      throw new TypeError('ticket: required: the wxhub_ticket query parameter of return_to');
    }
    const body = await this.#send('POST', '/v1/oauth/tickets/redeem', { ticket });
    for (const field of ['appid', 'openid', 'scope']) {
      if (typeof body[field] !== 'string') throw new HubUnreachable(`wxhub's redeem answer has no ${field}`);
    }
    return body;
  }

  /** The stored profile of a person who granted `snsapi_userinfo`. */
  async user(openid) {
    if (typeof openid !== 'string' || !openid) throw new TypeError('openid: required');
    return this.#send('GET', this.#app(`users/${encodeURIComponent(openid)}`));
  }

  /**
   * Calls a platform API with the hub's token, retrying once after a token error.
   * `path` is e.g. `/cgi-bin/user/get`; a second token error throws WeChatError.
   */
  async call(method, path, { query = {}, json, apiBase = 'https://api.weixin.qq.com' } = {}) {
    if (typeof path !== 'string' || !path.startsWith('/')) {
      throw new TypeError("path: must start with '/', e.g. /cgi-bin/user/get");
    }
    let token = await this.accessToken();
    for (let attempt = 1; attempt <= 2; attempt++) {
      const url = new URL(apiBase.replace(/\/+$/, '') + path);
      for (const [k, v] of Object.entries(query)) url.searchParams.set(k, String(v));
      url.searchParams.set('access_token', token);
      let resp;
      try {
        resp = await this.#fetch(url, {
          method,
          headers: json === undefined ? {} : { 'content-type': 'application/json' },
          body: json === undefined ? undefined : JSON.stringify(json),
          signal: AbortSignal.timeout(this.timeoutMs),
        });
      } catch (e) {
        // Not the URL: it holds the access token.
        throw new HubUnreachable(`${method} ${path}: ${e?.cause?.code ?? e?.name ?? 'failed'}`);
      }
      let body;
      try {
        body = await resp.json();
      } catch {
        throw new WeChatError(-1, `HTTP ${resp.status} without JSON from ${path}`);
      }
      const code = errcodeOf(body);
      if (TOKEN_ERRCODES.has(code) && attempt === 1) {
        token = await this.invalidate(token);
        continue;
      }
      if (code !== 0) throw new WeChatError(code, String(body.errmsg ?? ''));
      return body;
    }
    throw new Error('unreachable: the loop returns or throws');
  }

  /** Calls a platform API through the hub's proxy (it injects the token and retries once itself). */
  async proxy(method, path, { query = {}, json } = {}) {
    if (typeof path !== 'string' || !path.startsWith('/')) {
      throw new TypeError("path: must start with '/', e.g. /cgi-bin/user/get");
    }
    const url = new URL(this.hubUrl + this.#app('proxy' + path));
    for (const [k, v] of Object.entries(query)) url.searchParams.set(k, String(v));
    return this.#json(await this.#hub(method, url.toString(), json));
  }
}
