/**
 * A Hub repository at one commit, seen as a FileStore (see src/io/checkpoint.ts), so a remote model
 * reads exactly like a local directory:
 *
 * - `list()` is the commit's file listing (from the API, or from the cached snapshot offline);
 * - `readText()` downloads a small file into the cache and reads it;
 * - `open()` gives a ByteSource that reads the cached blob when there is one, and otherwise makes
 *   ranged HTTP reads: safetensors headers can be parsed without downloading the weights
 *   (`--dry-run`, `inspect`);
 * - `prepare()` downloads a whole file into the cache, with a progress bar, after which the reads
 *   of already-open ByteSources are local. Conversion calls it shard by shard.
 *
 * Memory stays bounded: downloads stream to disk, and a remote read holds only the bytes asked for
 * (plus a small read-ahead).
 */
import { readFile } from 'node:fs/promises';
import { HubmoeError, fileError } from '../errors.js';
import type { FileStore } from '../io/checkpoint.js';
import { LocalFile } from '../io/safetensors.js';
import type { ByteSource } from '../io/safetensors.js';
import type { RemoteFile } from './api.js';
import { HubApi, blobEtag } from './api.js';
import { RepoCache } from './cache.js';
import { downloadBlob } from './download.js';
import type { HubOptions, HubOptionsInput } from './env.js';
import { resolveHubOptions } from './env.js';
import type { FetchLike } from './http.js';
import { IdleTimeout, hubHttp, isTransient, networkError, sleep } from './http.js';
import type { Logger, ProgressReporter } from './progress.js';
import { createProgress, stderrLogger } from './progress.js';
import { parseRepoRef, pickRevision } from './repo-id.js';

export interface OpenHubStoreOptions extends HubOptionsInput {
  /** Branch, tag or commit sha (default `main`, or the `@revision` of the repo id). */
  revision?: string;
  /** Replaces the global fetch (tests, proxies). */
  fetch?: FetchLike;
  /** Log lines (default: stderr). */
  log?: Logger;
  /** Progress bars (default: per HubOptions.progress, on stderr). */
  progressReporter?: ProgressReporter;
  /** Retries after a dropped connection (default 3) and the first delay in ms (default 1000). */
  retries?: number;
  retryDelayMs?: number;
  /** Bytes fetched at least per remote read, kept for the next read (default 64 KiB). */
  readAheadBytes?: number;
  /** Settings already resolved (the CLI resolves once and passes them to every call). */
  hubOptions?: HubOptions;
}

export interface HubStoreFile {
  path: string;
  size: number;
  /** Set when the listing came from the API (not from an offline snapshot). */
  remote?: RemoteFile;
}

export interface HubStore extends FileStore {
  readonly repo: string;
  /** The revision asked for (branch, tag or sha). */
  readonly revision: string;
  /** The 40-hex commit sha it resolved to. */
  readonly commit: string;
  readonly offline: boolean;
  readonly endpoint: string;
  readonly cacheDir: string;
  /** `<cache>/models--org--name/snapshots/<commit>`. */
  readonly snapshotDir: string;
  /** Every file at the commit, with sizes (offline: the files present in the cached snapshot). */
  files(): HubStoreFile[];
  /** Size in bytes of a listed file. */
  size(path: string): number;
  isCached(path: string): Promise<boolean>;
  /** Downloads a file into the cache if needed; returns its path in the snapshot folder. */
  download(path: string): Promise<string>;
  prepare(path: string): Promise<void>;
}

const DEFAULT_READ_AHEAD = 64 * 1024;

export async function openHubStore(repoId: string, opts: OpenHubStoreOptions = {}): Promise<HubStore> {
  const ref = parseRepoRef(repoId);
  const revision = pickRevision(ref, opts.revision);
  const hub = opts.hubOptions ?? resolveHubOptions(opts);
  const log = opts.log ?? stderrLogger(hub.progressStream, { color: hub.color });
  const progress = opts.progressReporter ?? createProgress({ enabled: hub.progress, stream: hub.progressStream, color: hub.color });
  const cache = new RepoCache(hub.cacheDir, ref.repo);
  const http = hubHttp(hub, opts);
  const api = new HubApi(http);
  const settings: StoreSettings = {
    api,
    cache,
    log,
    progress,
    retries: opts.retries ?? 3,
    retryDelayMs: opts.retryDelayMs ?? 1000,
    readAhead: opts.readAheadBytes ?? DEFAULT_READ_AHEAD,
    idleTimeoutMs: hub.downloadTimeoutMs,
  };

  const fromCache = async (commit: string): Promise<HubStore> => {
    const files = (await cache.listSnapshot(commit)).map((f) => ({ path: f.path, size: f.size }));
    const store = new HubStoreImpl(ref.repo, revision, commit, true, hub, settings, files);
    for (const f of files) store.markCached(f.path, cache.pointerPath(commit, f.path));
    return store;
  };

  if (hub.offline) return fromCache(await cache.resolveOffline(revision));

  let commit: string;
  let listing: RemoteFile[];
  try {
    commit = await api.resolveRevision(ref.repo, revision);
    listing = await api.listFiles(ref.repo, commit);
  } catch (err) {
    // As Python does: when the Hub cannot be reached, a snapshot already in the cache will do.
    if (!(err instanceof HubmoeError && err.code === 'HUB_NETWORK')) throw err;
    const cached = await cache.resolveOffline(revision).catch(() => undefined);
    if (!cached) throw err;
    log.warn(`${err.message}\nusing the cached snapshot of ${ref.repo}@${revision} (commit ${cached}); set HF_HUB_OFFLINE=1 to skip the network`);
    return fromCache(cached);
  }
  await cache.ensureLayout();
  await cache.writeRef(revision, commit);
  const store = new HubStoreImpl(
    ref.repo,
    revision,
    commit,
    false,
    hub,
    settings,
    listing.map((f) => ({ path: f.path, size: f.size, remote: f })),
  );
  for (const f of listing) {
    const cached = await cache.cachedFile(commit, f.path);
    if (cached) store.markCached(f.path, cached);
  }
  return store;
}

interface StoreSettings {
  api: HubApi;
  cache: RepoCache;
  log: Logger;
  progress: ProgressReporter;
  retries: number;
  retryDelayMs: number;
  readAhead: number;
  idleTimeoutMs: number;
}

class HubStoreImpl implements HubStore {
  private readonly byPath: Map<string, HubStoreFile>;
  private readonly local = new Map<string, string>();
  private readonly pending = new Map<string, Promise<string>>();
  /** Where each file's bytes were last served from (a CDN URL after a redirect). */
  readonly locations = new Map<string, string>();

  constructor(
    readonly repo: string,
    readonly revision: string,
    readonly commit: string,
    readonly offline: boolean,
    private readonly hub: HubOptions,
    readonly settings: StoreSettings,
    fileList: HubStoreFile[],
  ) {
    this.byPath = new Map(fileList.map((f) => [f.path, f]));
  }

  get label(): string {
    return `${this.repo}@${this.commit.slice(0, 12)}`;
  }

  get endpoint(): string {
    return this.hub.endpoint;
  }

  get cacheDir(): string {
    return this.hub.cacheDir;
  }

  get snapshotDir(): string {
    return this.settings.cache.snapshotDir(this.commit);
  }

  markCached(path: string, localPath: string): void {
    this.local.set(path, localPath);
  }

  /** The cached path of a file, if its content is on disk. */
  localPath(path: string): string | undefined {
    return this.local.get(path);
  }

  files(): HubStoreFile[] {
    return [...this.byPath.values()];
  }

  async list(): Promise<string[]> {
    return [...this.byPath.keys()].sort();
  }

  /** The listed file, or the error for an unknown one (offline: every cached file is listed). */
  entry(path: string): HubStoreFile {
    const f = this.byPath.get(path);
    if (f) return f;
    if (this.offline) {
      throw new HubmoeError(
        'HUB_OFFLINE',
        `${this.repo}@${this.revision}: ${path} is not in the cache at ${this.hub.cacheDir} and offline mode is on (HF_HUB_OFFLINE): run once online (unset HF_HUB_OFFLINE) to download it`,
      );
    }
    throw new HubmoeError('HUB_NOT_FOUND', `${path} not found in ${this.repo} at revision ${this.revision} (commit ${this.commit})`);
  }

  size(path: string): number {
    return this.entry(path).size;
  }

  async isCached(path: string): Promise<boolean> {
    return this.local.has(path) || (await this.settings.cache.cachedFile(this.commit, path)) !== undefined;
  }

  async download(path: string): Promise<string> {
    const known = this.local.get(path);
    if (known) return known;
    const entry = this.entry(path);
    const cached = await this.settings.cache.cachedFile(this.commit, path);
    if (cached) {
      this.local.set(path, cached);
      return cached;
    }
    if (!entry.remote) {
      throw new HubmoeError('HUB_OFFLINE', `${this.label}/${path}: the cached file is gone (was the cache pruned?); run once online to download it again`);
    }
    // One download per file even when asked twice at once.
    let p = this.pending.get(path);
    if (!p) {
      const remote = entry.remote;
      p = (async () => {
        const { cache, api, progress, log, retries, retryDelayMs, idleTimeoutMs } = this.settings;
        await downloadBlob(cache, this.commit, remote, { api, progress, log, retries, retryDelayMs, idleTimeoutMs });
        const pointer = await cache.linkSnapshot(this.commit, path, blobEtag(remote));
        this.local.set(path, pointer);
        return pointer;
      })().finally(() => this.pending.delete(path));
      this.pending.set(path, p);
    }
    return p;
  }

  async prepare(path: string): Promise<void> {
    await this.download(path);
  }

  async readText(path: string): Promise<string> {
    const p = await this.download(path);
    try {
      return await readFile(p, 'utf-8');
    } catch (err) {
      throw fileError(p, err);
    }
  }

  async open(path: string): Promise<ByteSource> {
    return new HubByteSource(this, this.entry(path));
  }
}

/** Reads a file of a HubStore: from the cached blob when present, else with ranged HTTP reads. */
class HubByteSource implements ByteSource {
  private localFile: LocalFile | undefined;
  private chunk: { start: number; bytes: Uint8Array } | undefined;
  private warnedNoRange = false;

  constructor(
    private readonly store: HubStoreImpl,
    private readonly file: HubStoreFile,
  ) {}

  get label(): string {
    return `${this.store.label}/${this.file.path}`;
  }

  async size(): Promise<number> {
    return this.file.size;
  }

  async read(position: number, length: number): Promise<Uint8Array> {
    if (position < 0 || length < 0 || position + length > this.file.size) {
      throw new HubmoeError(
        'CORRUPT_FILE',
        `${this.label}: file ends at byte ${this.file.size}, expected ${position + length} (truncated or corrupt file?)`,
      );
    }
    if (length === 0) return new Uint8Array(0);
    const local = this.store.localPath(this.file.path);
    if (local) {
      if (!this.localFile) {
        this.localFile = new LocalFile(local);
        this.chunk = undefined;
      }
      return this.localFile.read(position, length);
    }
    const c = this.chunk;
    if (c && position >= c.start && position + length <= c.start + c.bytes.byteLength) {
      return c.bytes.slice(position - c.start, position - c.start + length);
    }
    const want = Math.min(this.file.size - position, Math.max(length, this.store.settings.readAhead));
    const bytes = await this.fetchRange(position, want);
    this.chunk = want > length ? { start: position, bytes } : undefined;
    return bytes.slice(0, length);
  }

  private async fetchRange(start: number, length: number): Promise<Uint8Array> {
    const { api, retries, retryDelayMs, log } = this.store.settings;
    const path = this.file.path;
    const ctx = { what: `reading bytes ${start}-${start + length} of ${path} from ${this.store.repo}` };
    for (let attempt = 0; ; attempt++) {
      const idle = new IdleTimeout(this.store.settings.idleTimeoutMs, ctx.what);
      try {
        const r = await api.getRange(this.store.repo, this.store.commit, path, start, start + length, {
          url: this.store.locations.get(path),
          signal: idle.signal,
        });
        this.store.locations.set(path, r.url);
        let skip = 0;
        if (r.res.status === 206) {
          const cr = r.res.headers.get('content-range') ?? '';
          if (!cr.startsWith(`bytes ${start}-`)) {
            await r.res.body?.cancel().catch(() => undefined);
            throw new HubmoeError('HUB_NETWORK', `${this.label}: the server answered byte range "${cr}" to a request for bytes ${start}-${start + length - 1}`);
          }
        } else {
          // The server ignored Range and sends the whole file: skip to the bytes wanted, then hang up.
          skip = start;
          if (!this.warnedNoRange) {
            this.warnedNoRange = true;
            log.warn(`${this.label}: the server ignores byte ranges; reading through the file instead`);
          }
        }
        return await collect(r.res, skip, length, this.label, r.url, ctx, () => idle.touch());
      } catch (err) {
        idle.clear();
        if (!isTransient(err) || attempt >= retries) throw err;
        await sleep(retryDelayMs * 2 ** attempt);
      } finally {
        idle.clear();
      }
    }
  }

  async close(): Promise<void> {
    await this.localFile?.close();
    this.localFile = undefined;
    this.chunk = undefined;
  }
}

/** Takes `length` bytes after skipping `skip` from a response body, then cancels the rest. */
async function collect(
  res: Response,
  skip: number,
  length: number,
  label: string,
  url: string,
  ctx: { what: string },
  onChunk: () => void,
): Promise<Uint8Array> {
  const out = new Uint8Array(length);
  let filled = 0;
  let toSkip = skip;
  if (!res.body) throw new HubmoeError('HUB_NETWORK', `${label}: empty answer from the server`);
  const reader = res.body.getReader();
  try {
    while (filled < length) {
      let step: ReadableStreamReadResult<Uint8Array>;
      try {
        step = await reader.read();
      } catch (err) {
        throw networkError(err, url, ctx);
      }
      if (step.done) break;
      onChunk();
      let chunk = step.value;
      if (toSkip > 0) {
        if (chunk.byteLength <= toSkip) {
          toSkip -= chunk.byteLength;
          continue;
        }
        chunk = chunk.subarray(toSkip);
        toSkip = 0;
      }
      const take = Math.min(chunk.byteLength, length - filled);
      out.set(chunk.subarray(0, take), filled);
      filled += take;
    }
  } finally {
    await reader.cancel().catch(() => undefined);
  }
  if (filled < length) {
    throw new HubmoeError('HUB_NETWORK', `${label}: the connection closed after ${filled} of ${length} bytes (${ctx.what})`);
  }
  return out;
}
