/** The errcodes that mean "this access token is not (or no longer) good": 40001, 40014, 42001. */
export declare const TOKEN_ERRCODES: ReadonlySet<number>;

export type TicketKind = 'jsapi' | 'wx_card';

/** The hub answered with an error (`{"error": {"code", "message"}}`). */
export declare class HubError extends Error {
  readonly status: number;
  /** The hub's stable code: `unauthorized`, `forbidden`, `not_found`, `unavailable`, … */
  readonly code: string;
  readonly hubMessage: string;
  /** `Retry-After` in seconds (429, 503) when it was longer than the client may wait, or the attempts ran out. */
  readonly retryAfter: number | null;
  constructor(status: number, code: string, message: string, retryAfter?: number | null);
}

/** The hub could not be reached, or did not answer JSON. */
export declare class HubUnreachable extends Error {}

/** The platform answered a non-zero errcode (after the one retry, for token errors). */
export declare class WeChatError extends Error {
  readonly errcode: number;
  readonly errmsg: string;
  constructor(errcode: number, errmsg: string);
}

/** A token or ticket and how long to use it. */
export interface Credential {
  value: string;
  /** The hub's expiry, Unix seconds on the hub's clock. */
  expiresAt: number;
  expiresIn: number;
  /** `Date.now()`-based time after which this process stops using it (margin taken off). */
  useUntilMs: number;
}

export interface JsSdkConfig {
  appId: string;
  timestamp: number;
  nonceStr: string;
  signature: string;
}

export interface OAuthResult {
  appid: string;
  openid: string;
  scope: string;
  unionid?: string;
  profile?: { nickname?: string; headimgurl?: string; privilege?: string[]; [field: string]: unknown };
  snapshot?: boolean;
  profile_error?: string;
  [field: string]: unknown;
}

export interface HubClientOptions {
  /** Per request to the hub or the platform (default 10000). */
  timeoutMs?: number;
  /** Stop using a cached value this long before it expires (default 10). */
  marginSeconds?: number;
  /** Longest `Retry-After` (429, 503) waited out before retrying (default 10). */
  maxWaitSeconds?: number;
  /** Attempts per hub call, the first included (default 3). */
  maxAttempts?: number;
  fetch?: typeof fetch;
  sleep?: (seconds: number) => Promise<void>;
}

export interface CallOptions {
  query?: Record<string, string | number>;
  json?: unknown;
}

export declare function retryAfterSeconds(value: string | null | undefined, nowMs?: number): number | null;

export declare class HubClient {
  readonly hubUrl: string;
  readonly appid: string;
  readonly timeoutMs: number;
  readonly marginSeconds: number;
  readonly maxWaitSeconds: number;
  readonly maxAttempts: number;
  constructor(hubUrl: string, clientKey: string, appid: string, options?: HubClientOptions);
  accessTokenCredential(): Promise<Credential>;
  accessToken(): Promise<string>;
  /** Report a token the platform rejected; resolves to the token to use now. Retry once with it, never loop. */
  invalidate(failedToken: string): Promise<string>;
  ticketCredential(kind: TicketKind): Promise<Credential>;
  ticket(kind: TicketKind): Promise<string>;
  jsapiTicket(): Promise<string>;
  wxCardTicket(): Promise<string>;
  invalidateTicket(kind: TicketKind, failedTicket: string): Promise<string>;
  jssdkConfig(url: string): Promise<JsSdkConfig>;
  redeemOAuthTicket(ticket: string): Promise<OAuthResult>;
  user(openid: string): Promise<Record<string, unknown>>;
  /** A platform API with the hub's token; one retry after 40001/40014/42001. */
  call(method: string, path: string, options?: CallOptions & { apiBase?: string }): Promise<Record<string, any>>;
  /** A platform API through the hub's proxy. */
  proxy(method: string, path: string, options?: CallOptions): Promise<Record<string, any>>;
  toJSON(): { hubUrl: string; appid: string };
}
