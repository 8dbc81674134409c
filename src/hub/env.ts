/**
 * Hub settings resolved the way Python's `huggingface_hub` resolves them, so that hubmoe and the
 * `hf` tools agree on the token, the endpoint and the cache without any configuration of their own.
 *
 * Precedence (first that is set wins):
 * - token: `--token`, `HF_TOKEN`, `HUGGING_FACE_HUB_TOKEN`, the token file (`HF_TOKEN_PATH`, else
 *   `$HF_HOME/token`, the file `hf auth login` writes). `HF_HUB_DISABLE_IMPLICIT_TOKEN` ignores all but `--token`.
 * - endpoint: `--endpoint`, `HF_ENDPOINT`, https://huggingface.co
 * - cache: `--cache-dir`, `HF_HUB_CACHE`, `HUGGINGFACE_HUB_CACHE`, `$HF_HOME/hub`,
 *   `$XDG_CACHE_HOME/huggingface/hub`, `~/.cache/huggingface/hub`
 * - offline: `--offline`, `HF_HUB_OFFLINE` (or `TRANSFORMERS_OFFLINE`) set to 1/ON/YES/TRUE
 * - progress bars: off when `HF_HUB_DISABLE_PROGRESS_BARS` is truthy, when `progress: false`, or
 *   when stderr is not a terminal.
 * - timeouts: `HF_HUB_ETAG_TIMEOUT` for API calls, `HF_HUB_DOWNLOAD_TIMEOUT` for a download that
 *   stalls (seconds, both 10 by default, as in Python).
 */
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';

export const DEFAULT_ENDPOINT = 'https://huggingface.co';

export type EnvLike = Readonly<Record<string, string | undefined>>;

export interface HubOptionsInput {
  /** `--token`: wins over every other source. */
  token?: string;
  /** `--endpoint`: the Hub's base URL (a mirror or a test server). */
  endpoint?: string;
  /** `--cache-dir`: the hub cache root (the folder that holds `models--org--name`). */
  cacheDir?: string;
  /** `--offline`: serve everything from the cache. */
  offline?: boolean;
  /** `false` turns progress bars off; `true` cannot force them onto a non-terminal. */
  progress?: boolean;
  /** The environment to read (default `process.env`); tests pass their own. */
  env?: EnvLike;
  /** The home directory (default `os.homedir()`). */
  homeDir?: string;
  /** The stream progress bars are drawn on (default `process.stderr`). */
  progressStream?: NodeJS.WritableStream;
}

export type TokenSource = 'option' | 'HF_TOKEN' | 'HUGGING_FACE_HUB_TOKEN' | 'token-file' | 'none';

export interface HubOptions {
  token: string | undefined;
  /** Where the token came from, for messages (never print the token itself). */
  tokenSource: TokenSource;
  /** The token file consulted (whether or not it exists). */
  tokenPath: string;
  /** Without a trailing slash. */
  endpoint: string;
  cacheDir: string;
  /** `$HF_HOME` as Python computes it. */
  hfHome: string;
  offline: boolean;
  progress: boolean;
  /** Colour allowed on stderr (`NO_COLOR` unset and stderr a terminal). */
  color: boolean;
  progressStream: NodeJS.WritableStream;
  /** Milliseconds an API request may take (`HF_HUB_ETAG_TIMEOUT`, seconds, default 10). */
  requestTimeoutMs: number;
  /** Milliseconds a download may go without receiving a byte (`HF_HUB_DOWNLOAD_TIMEOUT`, seconds, default 10). */
  downloadTimeoutMs: number;
}

/** Python's `_is_true`: 1, ON, YES, TRUE in any case. */
export function isTruthyEnv(value: string | undefined): boolean {
  if (value === undefined) return false;
  return ['1', 'ON', 'YES', 'TRUE'].includes(value.trim().toUpperCase());
}

function nonEmpty(value: string | undefined): string | undefined {
  return value !== undefined && value !== '' ? value : undefined;
}

/** `~` and `~/x` expanded, as Python's `os.path.expanduser` does for these variables. */
function expandHome(p: string, home: string): string {
  if (p === '~') return home;
  if (p.startsWith('~/')) return join(home, p.slice(2));
  return p;
}

/** Python's `_clean_token`: surrounding whitespace and newlines removed; empty means none. */
function cleanToken(token: string | undefined): string | undefined {
  if (token === undefined) return undefined;
  const t = token.replace(/[\r\n]/g, '').trim();
  return t === '' ? undefined : t;
}

/** Python's `_as_int` for the timeout variables: a positive number of seconds, else the default. */
function seconds(value: string | undefined, fallback: number): number {
  const n = value === undefined ? Number.NaN : Number(value);
  return (Number.isFinite(n) && n > 0 ? n : fallback) * 1000;
}

export function hfHomeDir(env: EnvLike = process.env, home = homedir()): string {
  const explicit = nonEmpty(env.HF_HOME);
  if (explicit) return resolve(expandHome(explicit, home));
  const xdg = nonEmpty(env.XDG_CACHE_HOME);
  return resolve(expandHome(xdg ?? join(home, '.cache'), home), 'huggingface');
}

export function hubCacheDir(env: EnvLike = process.env, home = homedir()): string {
  const explicit = nonEmpty(env.HF_HUB_CACHE) ?? nonEmpty(env.HUGGINGFACE_HUB_CACHE);
  if (explicit) return resolve(expandHome(explicit, home));
  return join(hfHomeDir(env, home), 'hub');
}

export function tokenFilePath(env: EnvLike = process.env, home = homedir()): string {
  const explicit = nonEmpty(env.HF_TOKEN_PATH);
  if (explicit) return resolve(expandHome(explicit, home));
  return join(hfHomeDir(env, home), 'token');
}

function readTokenFile(path: string): string | undefined {
  try {
    return cleanToken(readFileSync(path, 'utf-8'));
  } catch {
    return undefined;
  }
}

export function resolveHubOptions(input: HubOptionsInput = {}): HubOptions {
  const env = input.env ?? process.env;
  const home = input.homeDir ?? homedir();
  const tokenPath = tokenFilePath(env, home);

  let token: string | undefined;
  let tokenSource: TokenSource = 'none';
  const explicit = cleanToken(input.token);
  if (explicit) {
    token = explicit;
    tokenSource = 'option';
  } else if (!isTruthyEnv(env.HF_HUB_DISABLE_IMPLICIT_TOKEN)) {
    const candidates: Array<[TokenSource, string | undefined]> = [
      ['HF_TOKEN', cleanToken(env.HF_TOKEN)],
      ['HUGGING_FACE_HUB_TOKEN', cleanToken(env.HUGGING_FACE_HUB_TOKEN)],
    ];
    for (const [source, value] of candidates) {
      if (value) {
        token = value;
        tokenSource = source;
        break;
      }
    }
    if (!token) {
      token = readTokenFile(tokenPath);
      if (token) tokenSource = 'token-file';
    }
  }

  const endpoint = (nonEmpty(input.endpoint) ?? nonEmpty(env.HF_ENDPOINT) ?? DEFAULT_ENDPOINT).replace(/\/+$/, '');
  const cacheDir = input.cacheDir ? resolve(expandHome(input.cacheDir, home)) : hubCacheDir(env, home);
  const offline = input.offline ?? (isTruthyEnv(env.HF_HUB_OFFLINE) || isTruthyEnv(env.TRANSFORMERS_OFFLINE));
  const progressStream = input.progressStream ?? process.stderr;
  const isTTY = (progressStream as { isTTY?: boolean }).isTTY === true;
  const progress = isTTY && input.progress !== false && !isTruthyEnv(env.HF_HUB_DISABLE_PROGRESS_BARS);
  // no-color.org: NO_COLOR present and not empty turns colour off.
  const color = isTTY && nonEmpty(env.NO_COLOR) === undefined;

  return {
    token,
    tokenSource,
    tokenPath,
    endpoint,
    cacheDir,
    hfHome: hfHomeDir(env, home),
    offline,
    progress,
    color,
    progressStream,
    requestTimeoutMs: seconds(env.HF_HUB_ETAG_TIMEOUT, 10),
    downloadTimeoutMs: seconds(env.HF_HUB_DOWNLOAD_TIMEOUT, 10),
  };
}
