/**
 * The cache layout hubmoe writes must be the one Python's huggingface_hub writes (checked here path
 * by path, link by link), and downloads must resume, verify and never leave a corrupt blob.
 */
import { createHash } from 'node:crypto';
import { lstat, readFile, readdir, readlink, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { HubmoeError } from '../../src/errors.js';
import { RepoCache, repoFolderName } from '../../src/hub/cache.js';
import { openHubStore } from '../../src/hub/store.js';
import type { OpenHubStoreOptions } from '../../src/hub/store.js';
import { captureLogger, hubInput, makeTempDir } from './helpers.js';
import { startHubServer } from './server.js';
import type { HubServer } from './server.js';

const sha256 = (b: Uint8Array | string): string => createHash('sha256').update(b).digest('hex');
const gitSha1 = (b: Uint8Array | string): string => {
  const buf = typeof b === 'string' ? Buffer.from(b) : b;
  return createHash('sha1').update(`blob ${buf.byteLength}\0`).update(buf).digest('hex');
};

const WEIGHTS = Buffer.alloc(300_000);
for (let i = 0; i < WEIGHTS.length; i++) WEIGHTS[i] = (i * 7 + 3) & 0xff;
const CONFIG = '{"model_type":"mamba","hidden_size":8}';
const VOCAB = 'a\nb\nc\n';
const PART = Buffer.from([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);

let server: HubServer;
let commit: string;
let cacheDir: string;
let cleanup: () => Promise<void>;

beforeAll(async () => {
  server = await startHubServer();
  commit = server.addRepo('org/tiny', {
    'config.json': CONFIG,
    'model.safetensors': WEIGHTS,
    'tokenizer/vocab.txt': VOCAB,
    'weights/deep/part.bin': PART,
  });
  server.tag('org/tiny', 'v1', 'main');
});
afterAll(async () => server.close());

beforeEach(async () => {
  ({ dir: cacheDir, cleanup } = await makeTempDir('hubmoe-cache-'));
  server.clearRequests();
  for (const k of Object.keys(server.faults)) delete (server.faults as Record<string, unknown>)[k];
});
afterEach(async () => cleanup());

const opts = (extra: OpenHubStoreOptions = {}): OpenHubStoreOptions => ({
  ...hubInput(server, cacheDir),
  log: captureLogger(),
  retryDelayMs: 0,
  ...extra,
});

async function expectHubError(p: Promise<unknown>, code: string, ...contains: string[]): Promise<HubmoeError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(HubmoeError);
    const e = err as HubmoeError;
    expect(e.code, e.message).toBe(code);
    for (const c of contains) expect(e.message).toContain(c);
    return e;
  }
  throw new Error(`expected a ${code} error`);
}

async function tree(dir: string, rel = ''): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(join(dir, rel), { withFileTypes: true })) {
    const p = rel ? `${rel}/${e.name}` : e.name;
    if (e.isDirectory()) out.push(...(await tree(dir, p)));
    else out.push(p);
  }
  return out.sort();
}

describe('cache layout (as Python huggingface_hub writes it)', () => {
  it('names the repo folder models--org--name', () => {
    expect(repoFolderName('org/tiny')).toBe('models--org--tiny');
    expect(repoFolderName('gpt2')).toBe('models--gpt2');
  });

  it('writes blobs named by sha256 (LFS) and git sha1 (regular), relative snapshot links and refs/main', async () => {
    const store = await openHubStore('org/tiny', opts());
    expect(store.commit).toBe(commit);
    for (const f of await store.list()) await store.download(f);

    const repoDir = join(cacheDir, 'models--org--tiny');
    const blobs = {
      config: gitSha1(CONFIG),
      weights: sha256(WEIGHTS),
      vocab: gitSha1(VOCAB),
      part: sha256(PART),
      gitattributes: gitSha1(server.filesAt('org/tiny', 'main').get('.gitattributes')!.content),
    };
    expect(await tree(cacheDir)).toEqual(
      [
        'CACHEDIR.TAG',
        `models--org--tiny/blobs/${blobs.config}`,
        `models--org--tiny/blobs/${blobs.weights}`,
        `models--org--tiny/blobs/${blobs.vocab}`,
        `models--org--tiny/blobs/${blobs.part}`,
        `models--org--tiny/blobs/${blobs.gitattributes}`,
        'models--org--tiny/refs/main',
        `models--org--tiny/snapshots/${commit}/.gitattributes`,
        `models--org--tiny/snapshots/${commit}/config.json`,
        `models--org--tiny/snapshots/${commit}/model.safetensors`,
        `models--org--tiny/snapshots/${commit}/tokenizer/vocab.txt`,
        `models--org--tiny/snapshots/${commit}/weights/deep/part.bin`,
      ].sort(),
    );
    const snap = join(repoDir, 'snapshots', commit);
    expect(await readlink(join(snap, 'config.json'))).toBe(`../../blobs/${blobs.config}`);
    expect(await readlink(join(snap, 'model.safetensors'))).toBe(`../../blobs/${blobs.weights}`);
    expect(await readlink(join(snap, 'tokenizer/vocab.txt'))).toBe(`../../../blobs/${blobs.vocab}`);
    expect(await readlink(join(snap, 'weights/deep/part.bin'))).toBe(`../../../../blobs/${blobs.part}`);
    for (const f of ['config.json', 'model.safetensors', 'tokenizer/vocab.txt']) expect((await lstat(join(snap, f))).isSymbolicLink()).toBe(true);
    expect(await readFile(join(repoDir, 'refs', 'main'), 'utf-8')).toBe(commit); // no newline, as Python writes it
    expect(sha256(await readFile(join(snap, 'model.safetensors')))).toBe(sha256(WEIGHTS));
    expect(await readFile(join(cacheDir, 'CACHEDIR.TAG'), 'utf-8')).toMatch(/^Signature: 8a477f597d28d172789f06886806bc55\n/);
  });

  it('writes refs/<tag> for a tag, nested refs for refs/pr/N, and no ref for a sha', async () => {
    await openHubStore('org/tiny', opts({ revision: 'v1' }));
    await openHubStore(`org/tiny@${commit}`, opts());
    const refs = join(cacheDir, 'models--org--tiny', 'refs');
    expect(await readdir(refs)).toEqual(['v1']);
    expect(await readFile(join(refs, 'v1'), 'utf-8')).toBe(commit);

    const prCommit = server.commitFiles('org/tiny', 'main', { 'extra.txt': 'x' });
    server.repos.get('org/tiny')!.prs.set(1, prCommit);
    server.repos.get('org/tiny')!.branches.set('main', commit);
    const pr = await openHubStore('org/tiny', opts({ revision: 'refs/pr/1' }));
    expect(pr.commit).toBe(prCommit);
    expect(await readFile(join(refs, 'refs', 'pr', '1'), 'utf-8')).toBe(prCommit);
  });

  it('shares blobs with a cache Python wrote: an existing snapshot is used without downloading', async () => {
    const first = await openHubStore('org/tiny', opts());
    await first.download('model.safetensors');
    server.clearRequests();
    const second = await openHubStore('org/tiny', opts());
    expect(await second.isCached('model.safetensors')).toBe(true);
    await second.download('model.safetensors');
    expect(server.requests.filter((r) => r.url.includes('/resolve/') || r.server === 'cdn')).toEqual([]);
  });
});

describe('resume', () => {
  it('resumes a dropped download with a Range request and ends with the right blob', async () => {
    server.faults.dropAfter = { match: 'model.safetensors', bytes: 100_000 };
    const log = captureLogger();
    const store = await openHubStore('org/tiny', opts({ log, retries: 2 }));
    const path = await store.download('model.safetensors');
    expect(sha256(await readFile(path))).toBe(sha256(WEIGHTS));
    const cdn = server.requests.filter((r) => r.server === 'cdn');
    expect(cdn).toHaveLength(2);
    expect(cdn[0]!.range).toBeUndefined();
    expect(cdn[0]!.bytes).toBe(100_000);
    // The resume starts where the bytes that arrived end (at most the 100 000 sent).
    const resumedAt = Number(/^bytes=(\d+)-$/.exec(cdn[1]!.range ?? '')?.[1]);
    expect(resumedAt).toBeGreaterThan(0);
    expect(resumedAt).toBeLessThanOrEqual(100_000);
    expect(cdn[1]!.status).toBe(206);
    expect(cdn[1]!.bytes).toBe(WEIGHTS.length - resumedAt);
    expect(log.text()).toMatch(/resuming/);
    expect((await readdir(join(cacheDir, 'models--org--tiny', 'blobs'))).some((f) => f.endsWith('.incomplete'))).toBe(false);
  });

  it('keeps the partial file when retries run out, and the next run resumes it', async () => {
    server.faults.dropAfter = { match: 'model.safetensors', bytes: 120_000 };
    const store = await openHubStore('org/tiny', opts({ retries: 0 }));
    await expectHubError(store.download('model.safetensors'), 'HUB_NETWORK', 'model.safetensors', 'run the same command again to resume');
    const blobs = join(cacheDir, 'models--org--tiny', 'blobs');
    const incomplete = join(blobs, `${sha256(WEIGHTS)}.incomplete`);
    const kept = (await stat(incomplete)).size;
    expect(kept).toBeGreaterThan(0);
    expect(kept).toBeLessThanOrEqual(120_000);
    expect(await readdir(blobs)).toEqual([`${sha256(WEIGHTS)}.incomplete`]);
    expect(await store.isCached('model.safetensors')).toBe(false);

    server.clearRequests();
    const again = await openHubStore('org/tiny', opts({ retries: 0 }));
    const path = await again.download('model.safetensors');
    expect(sha256(await readFile(path))).toBe(sha256(WEIGHTS));
    const cdn = server.requests.filter((r) => r.server === 'cdn');
    expect(cdn.map((r) => r.range)).toEqual([`bytes=${kept}-`]);
    expect(cdn[0]!.bytes).toBe(WEIGHTS.length - kept);
    expect(await readdir(blobs)).toEqual([sha256(WEIGHTS)]);
  });

  it('restarts from zero when the server ignores Range (200 instead of 206)', async () => {
    const blobs = join(cacheDir, 'models--org--tiny', 'blobs');
    const store = await openHubStore('org/tiny', opts());
    await writeFile(join(blobs, `${sha256(WEIGHTS)}.incomplete`), WEIGHTS.subarray(0, 5000));
    server.faults.ignoreRange = true;
    const log = captureLogger();
    const again = await openHubStore('org/tiny', opts({ log }));
    const path = await again.download('model.safetensors');
    expect(sha256(await readFile(path))).toBe(sha256(WEIGHTS));
    const cdn = server.requests.filter((r) => r.server === 'cdn');
    expect(cdn.at(-1)!.range).toBe('bytes=5000-');
    expect(cdn.at(-1)!.status).toBe(200);
    expect(log.text()).toMatch(/does not support resuming/);
    void store;
  });

  it('discards a partial file that is longer than the file', async () => {
    const store = await openHubStore('org/tiny', opts());
    const blobs = join(cacheDir, 'models--org--tiny', 'blobs');
    await writeFile(join(blobs, `${sha256(WEIGHTS)}.incomplete`), Buffer.alloc(WEIGHTS.length + 10));
    expect(sha256(await readFile(await store.download('model.safetensors')))).toBe(sha256(WEIGHTS));
  });

  it('drops and resumes a download that stalls for HF_HUB_DOWNLOAD_TIMEOUT seconds', async () => {
    server.faults.stallAfter = { match: 'model.safetensors', bytes: 50_000 };
    const log = captureLogger();
    const store = await openHubStore('org/tiny', opts({ log, env: { HF_HUB_DOWNLOAD_TIMEOUT: '0.2' } }));
    const path = await store.download('model.safetensors');
    expect(sha256(await readFile(path))).toBe(sha256(WEIGHTS));
    expect(log.text()).toMatch(/no data for 0.2 s/);
    const cdn = server.requests.filter((r) => r.server === 'cdn');
    expect(cdn).toHaveLength(2);
    expect(cdn[1]!.range).toMatch(/^bytes=\d+-$/);
  });

  it('retries a 5xx answer', async () => {
    server.faults.status = { match: 'config.json', status: 503 };
    const store = await openHubStore('org/tiny', opts({ retries: 1 }));
    expect(await store.readText('config.json')).toBe(CONFIG);
  });
});

describe('checksums', () => {
  it('rejects a corrupt LFS download: no blob, no snapshot link, and a retry succeeds', async () => {
    server.faults.corrupt = { match: 'model.safetensors' };
    const store = await openHubStore('org/tiny', opts());
    await expectHubError(store.download('model.safetensors'), 'HUB_CHECKSUM', 'model.safetensors', 'sha256', 'corrupt', 'again');
    const repoDir = join(cacheDir, 'models--org--tiny');
    expect(await readdir(join(repoDir, 'blobs'))).toEqual([]);
    await expect(lstat(join(repoDir, 'snapshots', commit, 'model.safetensors'))).rejects.toThrow();
    expect(await store.isCached('model.safetensors')).toBe(false);

    const path = await store.download('model.safetensors');
    expect(sha256(await readFile(path))).toBe(sha256(WEIGHTS));
  });

  it('verifies regular files against their git sha1', async () => {
    server.faults.corrupt = { match: 'config.json' };
    const store = await openHubStore('org/tiny', opts());
    await expectHubError(store.readText('config.json'), 'HUB_CHECKSUM', 'git sha1');
    expect(await readdir(join(cacheDir, 'models--org--tiny', 'blobs'))).toEqual([]);
    expect(await store.readText('config.json')).toBe(CONFIG);
  });
});

describe('offline (HF_HUB_OFFLINE)', () => {
  it('works from the cache alone, and names the missing file when it is not cached', async () => {
    const online = await openHubStore('org/tiny', opts());
    await online.readText('config.json');
    server.clearRequests();

    const offline = await openHubStore('org/tiny', opts({ env: { HF_HUB_OFFLINE: '1' } }));
    expect(offline.offline).toBe(true);
    expect(offline.commit).toBe(commit);
    expect(await offline.list()).toEqual(['config.json']);
    expect(await offline.readText('config.json')).toBe(CONFIG);
    await expectHubError(offline.readText('model.safetensors'), 'HUB_OFFLINE', 'model.safetensors', 'run once online');
    await expectHubError(offline.open('model.safetensors'), 'HUB_OFFLINE', 'model.safetensors');
    const bySha = await openHubStore(`org/tiny@${commit}`, opts({ offline: true }));
    expect(await bySha.readText('config.json')).toBe(CONFIG);
    expect(server.requests).toEqual([]);
  });

  it('falls back to the cached snapshot, with a warning, when the Hub cannot be reached', async () => {
    const online = await openHubStore('org/tiny', opts());
    await online.readText('config.json');
    const down = await startHubServer();
    const endpoint = down.url;
    await down.close();
    const log = captureLogger();
    const store = await openHubStore('org/tiny', opts({ endpoint, log, retries: 0 }));
    expect(store.offline).toBe(true);
    expect(await store.readText('config.json')).toBe(CONFIG);
    expect(log.text()).toMatch(/could not reach .*\nusing the cached snapshot of org\/tiny@main/);
    await expectHubError(openHubStore('org/other', opts({ endpoint, retries: 0 })), 'HUB_NETWORK', endpoint);
  });

  it('fails clearly for a repo or revision that was never downloaded', async () => {
    await expectHubError(openHubStore('org/never', opts({ offline: true })), 'HUB_OFFLINE', 'org/never@main', 'run once online');
    const online = await openHubStore('org/tiny', opts());
    await online.readText('config.json');
    await expectHubError(openHubStore('org/tiny@v1', opts({ offline: true })), 'HUB_OFFLINE', 'org/tiny@v1');
    expect(await new RepoCache(cacheDir, 'org/tiny').resolveOffline('main')).toBe(commit);
  });
});
