/**
 * The HTTP layer every Hub call goes through: the token, the user agent, redirects followed by hand
 * (the Authorization header never leaves the Hub's origin: a CDN or S3 gets none), and the
 * translation of the Hub's answers into HubmoeErrors that say what to do.
 *
 * The Hub explains an error with `X-Error-Code` (RepoNotFound, RevisionNotFound, EntryNotFound,
 * GatedRepo) and `X-Error-Message` headers, and for API routes with a JSON body `{error}`. Note that
 * it answers 401 rather than 404 for a missing or private repo when no token is sent.
 */
import { HubmoeError } from '../errors.js';

export type FetchLike = typeof fetch;

export const HUBMOE_USER_AGENT = 'hubmoe/0.1.0; node/' + process.versions.node;

export interface HubHttpOptions {
  endpoint: string;
  token?: string;
  fetch?: FetchLike;
  userAgent?: string;
  /** Retries of idempotent API reads after a network error or a 5xx/429 (default 2). */
  retries?: number;
  /** Milliseconds before the first retry, doubled after each (default 500). */
  retryDelayMs?: number;
  /** Milliseconds a JSON API call may take (default 10 000). */
  requestTimeoutMs?: number;
}

/** What a request was for, so an error can name the repo, revision and file at fault. */
export interface RequestContext {
  /** A short description for messages: "listing files", "downloading config.json". */
  what: string;
  repo?: string;
  revision?: string;
  path?: string;
  /** A write (create, upload, commit): a 403 then means the token lacks write access. */
  write?: boolean;
}

export interface HubRequestInit {
  method?: string;
  headers?: Record<string, string>;
  body?: RequestInit['body'];
  /** Send the token (default true). Pre-signed upload URLs must not get it. */
  auth?: boolean;
  signal?: AbortSignal;
  /** Follow redirects (default true). */
  redirect?: boolean;
}

export interface HubResponse {
  res: Response;
  /** The URL that answered, after redirects. */
  url: string;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function describeCause(err: unknown): string {
  let e: unknown = err;
  const parts: string[] = [];
  for (let depth = 0; e && depth < 4; depth++) {
    const x = e as { code?: string; message?: string; cause?: unknown };
    const text = x.code ?? x.message;
    if (text && !parts.includes(text) && text !== 'fetch failed') parts.push(text);
    e = x.cause;
  }
  return parts.join(': ') || String(err);
}

/** A failure to reach the server or to read its answer, as a HubmoeError. */
export function networkError(err: unknown, url: string, ctx: RequestContext): HubmoeError {
  if (err instanceof HubmoeError) return err;
  if ((err as { name?: string })?.name === 'TimeoutError') {
    return new HubmoeError('HUB_NETWORK', `${ctx.what}: ${url} did not answer in time (HF_HUB_ETAG_TIMEOUT sets the limit in seconds)`, { cause: err });
  }
  if ((err as { name?: string })?.name === 'AbortError') {
    return new HubmoeError('HUB_NETWORK', `${ctx.what}: aborted`, { cause: err });
  }
  let origin = url;
  try {
    origin = new URL(url).origin;
  } catch {
    // keep the raw string
  }
  return new HubmoeError(
    'HUB_NETWORK',
    `${ctx.what}: could not reach ${origin} (${describeCause(err)}). Check your connection, or point --endpoint / HF_ENDPOINT at a reachable Hub; files already in the cache can be used with HF_HUB_OFFLINE=1`,
    { cause: err },
  );
}

function where(ctx: RequestContext): string {
  const rev = ctx.revision ? ` at revision ${ctx.revision}` : '';
  return ctx.repo ? `${ctx.repo}${rev}` : 'the Hub';
}

const LOGIN_HINT = 'set HF_TOKEN, pass --token, or run `hf auth login`';

/** Maps a Hub error answer to a HubmoeError. `body` is the response text (may be empty). */
export function hubError(
  status: number,
  headers: Headers,
  body: string,
  ctx: RequestContext & { endpoint: string; hadToken: boolean; url: string },
): HubmoeError {
  const code = headers.get('x-error-code') ?? undefined;
  let message = headers.get('x-error-message') ?? undefined;
  if (!message && body) {
    try {
      const parsed = JSON.parse(body) as { error?: unknown };
      if (typeof parsed.error === 'string') message = parsed.error;
    } catch {
      message = body.length < 300 ? body.trim() : undefined;
    }
  }
  const detail = message ? ` (${message})` : '';
  const repoPage = ctx.repo ? `${ctx.endpoint}/${ctx.repo}` : ctx.endpoint;

  if (code === 'GatedRepo') {
    const then = ctx.hadToken ? '' : `, then give hubmoe that account's token: ${LOGIN_HINT}`;
    return new HubmoeError(
      'HUB_GATED',
      `${ctx.what}: ${ctx.repo ?? 'the repo'} is gated and your ${ctx.hadToken ? 'token has' : 'request had no token, so it has'} no access${detail}. Accept the license at ${repoPage} with the account of your token${then}`,
    );
  }
  if (code === 'RevisionNotFound') {
    return new HubmoeError(
      'HUB_NOT_FOUND',
      `${ctx.what}: revision "${ctx.revision ?? '?'}" not found in ${ctx.repo ?? 'the repo'}; pass an existing branch, tag or commit sha with --revision`,
    );
  }
  if (code === 'EntryNotFound') {
    return new HubmoeError('HUB_NOT_FOUND', `${ctx.what}: ${ctx.path ?? 'the file'} not found in ${where(ctx)}`);
  }
  const invalidToken = message === 'Invalid credentials in Authorization header' || message === 'Invalid username or password.';
  if (status === 401 && ctx.hadToken && invalidToken) {
    return new HubmoeError('HUB_AUTH', `${ctx.what}: ${ctx.endpoint} rejected the token${detail}: token invalid or missing: ${LOGIN_HINT}`);
  }
  if (status === 401 && ctx.write && code !== 'RepoNotFound') {
    return new HubmoeError(
      'HUB_AUTH',
      `${ctx.what}: ${ctx.hadToken ? 'the token was refused' : 'no token was given'}${detail}; publishing needs a token with write access: ${LOGIN_HINT}`,
    );
  }
  if (code === 'RepoNotFound' || (status === 401 && !ctx.hadToken && ctx.repo)) {
    const hint = ctx.hadToken
      ? 'check the repo id, or whether your token can see this (private) repo'
      : `check the repo id; if it is a private repo, ${LOGIN_HINT}`;
    return new HubmoeError('HUB_NOT_FOUND', `${ctx.what}: repository ${ctx.repo ?? '?'} not found on ${ctx.endpoint}: ${hint}`);
  }
  if (status === 401) {
    return new HubmoeError('HUB_AUTH', `${ctx.what}: ${ctx.endpoint} answered 401${detail}: token invalid or missing: ${LOGIN_HINT}`);
  }
  if (status === 403) {
    if (ctx.write) {
      return new HubmoeError(
        'HUB_AUTH',
        `${ctx.what}: your token cannot write to ${ctx.repo ?? 'this repo'}${detail}. Use a token with write access (https://huggingface.co/settings/tokens): ${LOGIN_HINT}`,
      );
    }
    return new HubmoeError('HUB_AUTH', `${ctx.what}: access to ${where(ctx)} forbidden${detail}; check your token's permissions (${LOGIN_HINT})`);
  }
  if (status === 404) {
    const what = ctx.path ? `${ctx.path} in ${where(ctx)}` : where(ctx);
    return new HubmoeError('HUB_NOT_FOUND', `${ctx.what}: ${what} not found${detail}`);
  }
  if (status === 409) {
    return new HubmoeError('BAD_ARGUMENT', `${ctx.what}: conflict on ${where(ctx)}${detail}`);
  }
  if (status === 429) {
    return new HubmoeError('HUB_NETWORK', `${ctx.what}: ${ctx.endpoint} is rate-limiting requests${detail}; wait a minute and run again`);
  }
  if (status >= 500) {
    return new HubmoeError('HUB_NETWORK', `${ctx.what}: ${ctx.endpoint} answered ${status}${detail}; the Hub may be having trouble, run again later`);
  }
  return new HubmoeError('HUB_NETWORK', `${ctx.what}: unexpected answer ${status} from ${ctx.url}${detail}`);
}

/**
 * Aborts a transfer that receives nothing for `ms` milliseconds; `touch()` on every chunk. The abort
 * reason is a HUB_NETWORK error, so the transfer is retried (and resumed) like a dropped connection.
 */
export class IdleTimeout {
  private readonly controller = new AbortController();
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly ms: number,
    private readonly what: string,
  ) {
    this.touch();
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  touch(): void {
    clearTimeout(this.timer);
    if (!(this.ms > 0 && Number.isFinite(this.ms))) return;
    this.timer = setTimeout(() => {
      this.controller.abort(
        new HubmoeError('HUB_NETWORK', `${this.what}: no data for ${this.ms / 1000} s (HF_HUB_DOWNLOAD_TIMEOUT sets the limit in seconds)`),
      );
    }, this.ms);
    this.timer.unref?.();
  }

  clear(): void {
    clearTimeout(this.timer);
  }
}

/** Whether an error is worth retrying (a dropped connection, a 5xx, a 429). */
export function isTransient(err: unknown): boolean {
  return err instanceof HubmoeError && err.code === 'HUB_NETWORK' && !/aborted$/.test(err.message);
}

export class HubHttp {
  readonly endpoint: string;
  readonly token: string | undefined;
  readonly retries: number;
  readonly retryDelayMs: number;
  readonly requestTimeoutMs: number;
  private readonly fetchImpl: FetchLike;
  private readonly userAgent: string;
  private readonly origin: string;

  constructor(opts: HubHttpOptions) {
    this.endpoint = opts.endpoint.replace(/\/+$/, '');
    this.token = opts.token;
    this.fetchImpl = opts.fetch ?? fetch;
    this.userAgent = opts.userAgent ?? HUBMOE_USER_AGENT;
    this.retries = opts.retries ?? 2;
    this.retryDelayMs = opts.retryDelayMs ?? 500;
    this.requestTimeoutMs = opts.requestTimeoutMs ?? 10_000;
    try {
      this.origin = new URL(this.endpoint).origin;
    } catch {
      throw new HubmoeError('BAD_ARGUMENT', `endpoint "${opts.endpoint}" is not a URL (expected e.g. https://huggingface.co)`);
    }
  }

  /** An absolute URL on the Hub; `path` starts with `/`. */
  url(path: string, query?: Record<string, string>): string {
    const qs = query ? `?${new URLSearchParams(query).toString()}` : '';
    return `${this.endpoint}${path}${qs}`;
  }

  /**
   * One request, following redirects; the Authorization header is only sent to the Hub's own
   * origin. Network failures become HUB_NETWORK; HTTP errors are returned, not thrown.
   */
  async request(url: string, init: HubRequestInit, ctx: RequestContext): Promise<HubResponse> {
    let current = url;
    let method = init.method ?? 'GET';
    let body = init.body;
    for (let hop = 0; hop <= 10; hop++) {
      const headers: Record<string, string> = { 'user-agent': this.userAgent, ...init.headers };
      const sameOrigin = new URL(current).origin === this.origin;
      if ((init.auth ?? true) && this.token && sameOrigin) headers.authorization = `Bearer ${this.token}`;
      let res: Response;
      try {
        res = await this.fetchImpl(current, {
          method,
          headers,
          body,
          redirect: 'manual',
          signal: init.signal,
          ...(body instanceof ReadableStream ? { duplex: 'half' } : {}),
        } as RequestInit);
      } catch (err) {
        throw networkError(err, current, ctx);
      }
      const location = res.headers.get('location');
      if (init.redirect !== false && res.status >= 300 && res.status < 400 && location) {
        await res.body?.cancel().catch(() => undefined);
        current = new URL(location, current).toString();
        if (res.status === 303) {
          method = 'GET';
          body = undefined;
        }
        continue;
      }
      return { res, url: current };
    }
    throw new HubmoeError('HUB_NETWORK', `${ctx.what}: too many redirects from ${url}`);
  }

  /** Reads an error answer's body (small) and maps it to a HubmoeError. */
  async errorFrom(r: HubResponse, ctx: RequestContext): Promise<HubmoeError> {
    let text = '';
    try {
      text = await r.res.text();
    } catch {
      // the body is only a hint
    }
    return hubError(r.res.status, r.res.headers, text, {
      ...ctx,
      endpoint: this.endpoint,
      hadToken: this.token !== undefined && new URL(r.url).origin === this.origin,
      url: r.url,
    });
  }

  /** A request whose answer must be 2xx; anything else is thrown as a HubmoeError. */
  async ok(url: string, init: HubRequestInit, ctx: RequestContext): Promise<HubResponse> {
    const r = await this.request(url, init, ctx);
    if (r.res.status >= 200 && r.res.status < 300) return r;
    throw await this.errorFrom(r, ctx);
  }

  /** A JSON answer; idempotent reads (GET) are retried after transient failures. */
  async json<T>(url: string, init: HubRequestInit, ctx: RequestContext): Promise<{ data: T; headers: Headers }> {
    const retries = (init.method ?? 'GET') === 'GET' ? this.retries : 0;
    for (let attempt = 0; ; attempt++) {
      try {
        const signal = init.signal ?? (retries > 0 ? AbortSignal.timeout(this.requestTimeoutMs) : undefined);
        const r = await this.ok(url, { ...init, signal }, ctx);
        let text: string;
        try {
          text = await r.res.text();
        } catch (err) {
          throw networkError(err, url, ctx);
        }
        try {
          return { data: JSON.parse(text) as T, headers: r.res.headers };
        } catch {
          throw new HubmoeError('HUB_NETWORK', `${ctx.what}: ${r.url} did not answer with JSON (is ${this.endpoint} a Hub endpoint?)`);
        }
      } catch (err) {
        if (attempt >= retries || !isTransient(err)) throw err;
        await sleep(this.retryDelayMs * 2 ** attempt);
      }
    }
  }
}

/** The HTTP client for resolved Hub settings (the store and publish make theirs the same way). */
export function hubHttp(hub: { endpoint: string; token: string | undefined; requestTimeoutMs: number }, opts: { fetch?: FetchLike; retries?: number; retryDelayMs?: number }): HubHttp {
  return new HubHttp({
    endpoint: hub.endpoint,
    token: hub.token,
    fetch: opts.fetch,
    retries: opts.retries,
    retryDelayMs: opts.retryDelayMs,
    requestTimeoutMs: hub.requestTimeoutMs,
  });
}
