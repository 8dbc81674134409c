/**
 * Downloads one file into the cache's blob store: resumable, verified, atomic.
 *
 * - A partial download lives in `blobs/{etag}.incomplete`. A writer first renames it to a name of its
 *   own (`{etag}.{random}.incomplete`), so two processes never append to the same file; the loser of
 *   that race simply starts afresh.
 * - It resumes with `Range: bytes={have}-` and only appends when the server answers 206 with a
 *   matching Content-Range; a 200 means the range was ignored, and the file is rewritten from 0.
 * - A dropped connection is retried (resuming) a few times; when retries run out the partial file
 *   goes back to `{etag}.incomplete` for the next run, and the error says to run again.
 * - The content is hashed as it streams (sha256 for LFS files, git sha1 otherwise) and compared with
 *   what the Hub listed. A mismatch deletes the download: a corrupt blob is never kept.
 * - The finished file is renamed to `blobs/{etag}` in one step.
 */
import { createHash } from 'node:crypto';
import type { Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, rename, rm, stat } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { HubmoeError, fileError } from '../errors.js';
import type { HubApi, RemoteFile } from './api.js';
import { blobEtag } from './api.js';
import type { RepoCache } from './cache.js';
import { tempSuffix } from './cache.js';
import { gitBlobHasher } from './hash.js';
import { IdleTimeout, isTransient, networkError, sleep } from './http.js';
import type { Logger, ProgressReporter } from './progress.js';
import { formatBytes } from './progress.js';

export interface DownloadOptions {
  api: HubApi;
  progress: ProgressReporter;
  log: Logger;
  /** Resumed attempts after a dropped connection within this call (default 3). */
  retries?: number;
  /** Milliseconds before the first retry, doubled after each (default 1000). */
  retryDelayMs?: number;
  /** A download that receives nothing for this long is dropped and resumed (default 10 000). */
  idleTimeoutMs?: number;
}

class Verifier {
  private hash: Hash;

  constructor(private readonly file: RemoteFile) {
    this.hash = this.fresh();
  }

  private fresh(): Hash {
    return this.file.lfs ? createHash('sha256') : gitBlobHasher(this.file.size);
  }

  reset(): void {
    this.hash = this.fresh();
  }

  update(chunk: Uint8Array): void {
    this.hash.update(chunk);
  }

  digest(): string {
    return this.hash.digest('hex');
  }

  get algorithm(): string {
    return this.file.lfs ? 'sha256' : 'git sha1';
  }
}

async function sizeOf(path: string): Promise<number> {
  try {
    return (await stat(path)).size;
  } catch {
    return 0;
  }
}

/** Feeds the first `length` bytes already on disk to the verifier (when resuming). */
async function hashPrefix(path: string, length: number, verifier: Verifier): Promise<void> {
  if (length === 0) return;
  for await (const chunk of createReadStream(path, { start: 0, end: length - 1, highWaterMark: 1 << 20 })) {
    verifier.update(chunk as Buffer);
  }
}

/** Parses `Content-Range: bytes a-b/total` → a. */
function contentRangeStart(header: string | null): number | undefined {
  const m = header ? /^bytes\s+(\d+)-\d+\/(\d+|\*)$/.exec(header.trim()) : null;
  return m ? Number(m[1]) : undefined;
}

/**
 * Makes sure `blobs/{etag}` holds the file's verified content; returns its path. Does nothing when
 * the blob is already there.
 */
export async function downloadBlob(cache: RepoCache, commit: string, file: RemoteFile, opts: DownloadOptions): Promise<string> {
  const etag = blobEtag(file);
  const blob = cache.blobPath(etag);
  if (await cache.exists(blob)) return blob;
  await cache.ensureLayout();

  const shared = `${blob}.incomplete`;
  const mine = `${blob}.${tempSuffix()}.incomplete`;
  let resumed = true;
  try {
    await rename(shared, mine);
  } catch {
    resumed = false;
  }

  let fh: FileHandle;
  try {
    fh = await open(mine, 'a');
  } catch (err) {
    throw fileError(mine, err, 'create');
  }
  const verifier = new Verifier(file);
  const retries = opts.retries ?? 3;
  const retryDelayMs = opts.retryDelayMs ?? 1000;
  let have = resumed ? await sizeOf(mine) : 0;
  if (have > file.size) {
    await fh.truncate(0);
    have = 0;
  }
  if (have > 0) {
    opts.log.info(`${file.path}: resuming at ${formatBytes(have)} of ${formatBytes(file.size)}`);
    await hashPrefix(mine, have, verifier);
  }
  const bar = opts.progress.start(file.path, file.size, have);
  let url: string | undefined;
  let ok = false;

  try {
    for (let attempt = 0; have < file.size; attempt++) {
      const idle = new IdleTimeout(opts.idleTimeoutMs ?? 10_000, `downloading ${file.path} from ${cache.repo}`);
      try {
        const r = await opts.api.getRange(cache.repo, commit, file.path, have, undefined, { url, signal: idle.signal });
        url = r.url;
        const { res } = r;
        if (res.status === 206) {
          const start = contentRangeStart(res.headers.get('content-range'));
          if (start !== have) {
            // A range other than the one asked for: start over rather than splice wrong bytes.
            await res.body?.cancel().catch(() => undefined);
            await fh.truncate(0);
            verifier.reset();
            have = 0;
            bar.set(0);
            throw new HubmoeError('HUB_NETWORK', `${file.path}: the server answered a different byte range (${res.headers.get('content-range')})`);
          }
        } else if (have > 0) {
          // 200: the server ignored the Range header and sends the whole file.
          opts.log.warn(`${file.path}: the server does not support resuming; downloading from the start`);
          await fh.truncate(0);
          verifier.reset();
          have = 0;
          bar.set(0);
        }
        if (!res.body) throw new HubmoeError('HUB_NETWORK', `${file.path}: empty answer from the server`);
        try {
          for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
            if (have + chunk.byteLength > file.size) {
              throw new HubmoeError(
                'HUB_CHECKSUM',
                `${file.path}: the server sent more than the ${file.size} bytes the Hub lists; the download was corrupt and was deleted. Run the command again to retry`,
              );
            }
            idle.touch();
            await fh.write(chunk);
            verifier.update(chunk);
            have += chunk.byteLength;
            bar.tick(chunk.byteLength);
          }
        } catch (err) {
          if (err instanceof HubmoeError) throw err;
          throw networkError(err, r.url, { what: `downloading ${file.path} from ${cache.repo}` });
        }
        idle.clear();
        if (have < file.size) {
          throw new HubmoeError('HUB_NETWORK', `${file.path}: the connection closed after ${formatBytes(have)} of ${formatBytes(file.size)}`);
        }
      } catch (err) {
        idle.clear();
        if (!isTransient(err) || attempt >= retries) throw err;
        opts.log.warn(`${file.path}: ${(err as Error).message}; resuming (attempt ${attempt + 2} of ${retries + 1})`);
        await sleep(retryDelayMs * 2 ** attempt);
      }
    }
    await fh.close();

    const digest = verifier.digest();
    const expected = etag;
    if (digest !== expected) {
      await rm(mine, { force: true });
      throw new HubmoeError(
        'HUB_CHECKSUM',
        `${cache.repo}/${file.path}: the downloaded content does not match the ${verifier.algorithm} the Hub lists (expected ${expected}, got ${digest}): the download was corrupt and was deleted. Run the command again to retry`,
      );
    }
    try {
      await rename(mine, blob);
    } catch (err) {
      throw fileError(blob, err, 'move into place');
    }
    ok = true;
    bar.done();
    return blob;
  } catch (err) {
    await fh.close().catch(() => undefined);
    if (!ok) bar.fail();
    if (err instanceof HubmoeError && err.code === 'HUB_CHECKSUM') {
      await rm(mine, { force: true });
      throw err;
    }
    // Keep what arrived for the next run to resume, under the shared name.
    const partial = await sizeOf(mine);
    if (partial > 0) await rename(mine, shared).catch(() => rm(mine, { force: true }));
    else await rm(mine, { force: true });
    if (err instanceof HubmoeError && err.code === 'HUB_NETWORK' && partial > 0) {
      throw new HubmoeError(
        'HUB_NETWORK',
        `${err.message}. ${formatBytes(partial)} of ${file.path} were kept in the cache: run the same command again to resume`,
        { cause: err },
      );
    }
    throw err;
  }
}
