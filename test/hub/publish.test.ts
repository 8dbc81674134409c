/**
 * publish against the emulator: validation of the model dir, the model card, one commit with LFS for
 * large and binary files, idempotence, --dry-run, --branch, --create-pr, multipart uploads, auth
 * errors, and a publish → download round trip.
 */
import { createHash } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { convert } from '../../src/convert.js';
import { prune } from '../../src/scap/prune.js';
import { loadSpec } from '../../src/schema/load.js';
import { FIXTURES, errorOf } from '../helpers.js';
import { CARD_MARKER } from '../../src/hub/card.js';
import { publish } from '../../src/hub/publish.js';
import type { PublishOptions } from '../../src/hub/publish.js';
import { openHubStore } from '../../src/hub/store.js';
import { openCheckpoint } from '../../src/io/checkpoint.js';
import { CaptureStream, captureLogger, f32Entry, hubInput, makeTempDir, safetensorsBytes } from './helpers.js';
import { startHubServer } from './server.js';
import type { HubServer } from './server.js';
import { tinySpec } from './spec-fixture.js';

let server: HubServer;
let work: string;
let cleanup: () => Promise<void>;
let counter = 0;

const ONNX_DATA = Buffer.alloc(400_000);
for (let i = 0; i < ONNX_DATA.length; i++) ONNX_DATA[i] = (i * 31 + 7) & 0xff;
const sha256 = (b: Uint8Array | string): string => createHash('sha256').update(b).digest('hex');

beforeAll(async () => {
  server = await startHubServer({ multipartThreshold: 1_000_000, multipartChunkSize: 300_000, verifyAction: true });
});
afterAll(async () => server.close());
beforeEach(async () => {
  ({ dir: work, cleanup } = await makeTempDir('hubmoe-publish-'));
  server.clearRequests();
});
afterEach(async () => cleanup());

/** A model-dir-like folder: what `hubmoe convert` writes, plus a safetensors checkpoint for the round trip. */
async function makeModelDir(name = 'model'): Promise<string> {
  const dir = join(work, name);
  await mkdir(join(dir, 'onnx'), { recursive: true });
  await writeFile(join(dir, 'hubmoe.json'), JSON.stringify(tinySpec(), null, 2));
  await writeFile(join(dir, 'config.json'), '{"model_type":"blackmamba","hidden_size":8}');
  await writeFile(join(dir, 'generation_config.json'), '{"eos_token_id":2}');
  await writeFile(join(dir, 'tokenizer.json'), '{"version":"1.0","model":{"type":"BPE"}}');
  await writeFile(join(dir, 'onnx', 'model.onnx'), Buffer.from([8, 9, 0, 1, 2, 3, 0, 0, 42]));
  await writeFile(join(dir, 'onnx', 'model.onnx_data'), ONNX_DATA);
  await writeFile(join(dir, 'model.safetensors'), await safetensorsBytes([f32Entry('embed.weight', [32, 8], 0.5)]));
  await writeFile(join(dir, '.DS_Store'), 'hidden files are not published');
  return dir;
}

function newRepo(): string {
  return `alice/published-${++counter}`;
}

const opts = (extra: PublishOptions = {}): PublishOptions => ({
  ...hubInput(server, join(work, 'cache'), { token: 'hf_write_alice' }),
  log: captureLogger(),
  retryDelayMs: 0,
  ...extra,
});

const MODEL_FILES = [
  'README.md',
  'config.json',
  'generation_config.json',
  'hubmoe.json',
  'model.safetensors',
  'onnx/model.onnx',
  'onnx/model.onnx_data',
  'tokenizer.json',
];

describe('the model dir', () => {
  it('refuses a dir that is not a hubmoe model dir, naming what is missing', async () => {
    const dir = join(work, 'not-a-model');
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, 'config.json'), '{}');
    const e = await errorOf(publish(dir, newRepo(), opts()));
    expect(e.code).toBe('BAD_ARGUMENT');
    expect(e.message).toContain('missing hubmoe.json, onnx/*.onnx');
    expect((await errorOf(publish(join(work, 'nope'), newRepo(), opts()))).code).toBe('BAD_ARGUMENT');
    expect(server.requests).toEqual([]);
  });

  it('refuses an invalid hubmoe.json with BAD_SPEC', async () => {
    const dir = await makeModelDir();
    await writeFile(join(dir, 'hubmoe.json'), JSON.stringify({ ...tinySpec(), hidden: -1 }));
    const e = await errorOf(publish(dir, newRepo(), opts()));
    expect(e.code).toBe('BAD_SPEC');
    expect(e.message).toContain('$.hidden');
  });

  it('needs org/name', async () => {
    const dir = await makeModelDir();
    expect((await errorOf(publish(dir, 'just-a-name', opts()))).code).toBe('BAD_ARGUMENT');
  });
});

describe('publish', () => {
  it('--dry-run lists what would be uploaded and writes nothing', async () => {
    const dir = await makeModelDir();
    const repo = newRepo();
    const log = captureLogger();
    const r = await publish(dir, repo, opts({ dryRun: true, private: true, log }));
    expect(r).toMatchObject({ dryRun: true, repoCreated: true, skipped: [] });
    expect(r.uploaded).toEqual(MODEL_FILES);
    expect(r.files.find((f) => f.path === 'onnx/model.onnx_data')).toMatchObject({ lfs: true, size: ONNX_DATA.length, status: 'new' });
    expect(r.files.find((f) => f.path === 'config.json')!.lfs).toBe(false);
    expect(log.text()).toContain(`would create private repo ${repo}`);
    expect(log.text()).toMatch(/\+ onnx\/model\.onnx_data\s+400 kB\s+\(LFS\)/);
    expect(server.requests.every((q) => q.method === 'GET')).toBe(true);
    expect(server.repos.has(repo)).toBe(false);
    await expect(readFile(join(dir, 'README.md'))).rejects.toThrow();
  });

  it('creates the repo and uploads everything in one commit, LFS for large and binary files', async () => {
    const dir = await makeModelDir();
    const repo = newRepo();
    const log = captureLogger();
    const r = await publish(dir, repo, opts({ private: true, log, commitMessage: 'first upload' }));
    expect(r.repoCreated).toBe(true);
    expect(r.uploaded).toEqual(MODEL_FILES);
    expect(r.commitUrl).toBe(`${server.url}/${repo}/commit/${r.commitOid}`);
    const emu = server.repos.get(repo)!;
    expect(emu.private).toBe(true);
    const head = emu.commits.get(emu.branches.get('main')!)!;
    expect(head.summary).toBe('first upload');
    expect(head.parent).toBeDefined();
    expect(emu.commits.get(head.parent!)!.summary).toBe('initial commit'); // one commit on top of creation
    const files = server.filesAt(repo, 'main');
    expect([...files.keys()].sort()).toEqual(['.gitattributes', ...MODEL_FILES]);
    expect(files.get('onnx/model.onnx_data')!.lfs).toBe(true);
    expect(files.get('onnx/model.onnx')!.lfs).toBe(true);
    expect(files.get('model.safetensors')!.lfs).toBe(true);
    expect(files.get('config.json')!.lfs).toBe(false);
    expect(files.get('hubmoe.json')!.lfs).toBe(false);
    expect(sha256(files.get('onnx/model.onnx_data')!.content)).toBe(sha256(ONNX_DATA));
    // The card was written into the dir and uploaded.
    const card = await readFile(join(dir, 'README.md'), 'utf-8');
    expect(card).toContain(CARD_MARKER);
    expect(card).toContain('base_model: Zyphra/BlackMamba-tiny');
    expect(files.get('README.md')!.content.toString()).toBe(card);
    // Pre-signed uploads got no token; Hub calls did.
    const puts = server.requests.filter((q) => q.method === 'PUT');
    expect(puts.length).toBe(3);
    expect(puts.every((q) => q.server === 'cdn' && q.authorization === undefined)).toBe(true);
    expect(server.requests.filter((q) => q.url.includes('/commit/'))).toHaveLength(1);
    // Each uploaded LFS object was verified, with the token (the verify URL is on the Hub).
    const verifies = server.requests.filter((q) => q.url.endsWith('/info/lfs/objects/verify'));
    expect(verifies).toHaveLength(3);
    expect(verifies.every((q) => q.authorization === 'Bearer hf_write_alice' && q.status === 200)).toBe(true);
    expect(log.text()).toContain(`uploaded ${MODEL_FILES.length} files`);
  });

  it('is idempotent: a second run uploads nothing and says so; a change uploads only that file', async () => {
    const dir = await makeModelDir();
    const repo = newRepo();
    await publish(dir, repo, opts());
    const headBefore = server.repos.get(repo)!.branches.get('main');
    server.clearRequests();
    const log = captureLogger();
    const again = await publish(dir, repo, opts({ log }));
    expect(again.uploaded).toEqual([]);
    expect(again.skipped).toEqual(MODEL_FILES);
    expect(again.commitUrl).toBeUndefined();
    expect(log.text()).toContain(`nothing to upload: ${repo} already has the same ${MODEL_FILES.length} files`);
    expect(server.requests.filter((q) => q.method !== 'GET')).toEqual([]);
    expect(server.repos.get(repo)!.branches.get('main')).toBe(headBefore);

    await writeFile(join(dir, 'generation_config.json'), '{"eos_token_id":3}');
    const third = await publish(dir, repo, opts());
    expect(third.uploaded).toEqual(['generation_config.json']);
    expect(server.filesAt(repo, 'main').get('generation_config.json')!.content.toString()).toBe('{"eos_token_id":3}');
  });

  it('keeps a README.md the user wrote, and refreshes one hubmoe wrote', async () => {
    const dir = await makeModelDir();
    await writeFile(join(dir, 'README.md'), '# my own card\n');
    const log = captureLogger();
    await publish(dir, newRepo(), opts({ log }));
    expect(await readFile(join(dir, 'README.md'), 'utf-8')).toBe('# my own card\n');
    expect(log.text()).toMatch(/keeping .*README\.md/);

    await writeFile(join(dir, 'README.md'), `---\n---\n${CARD_MARKER}\nstale`);
    await publish(dir, newRepo(), opts());
    expect(await readFile(join(dir, 'README.md'), 'utf-8')).toContain('## How to run it');
  });

  it('--branch creates the branch from main and commits there, leaving main alone', async () => {
    const dir = await makeModelDir();
    const repo = newRepo();
    server.addRepo(repo, { 'notes.txt': 'on main' });
    const mainHead = server.repos.get(repo)!.branches.get('main');
    const r = await publish(dir, repo, opts({ branch: 'onnx' }));
    expect(r.branchCreated).toBe(true);
    expect(r.repoCreated).toBe(false);
    expect(server.repos.get(repo)!.branches.get('main')).toBe(mainHead);
    const files = server.filesAt(repo, 'onnx');
    expect(files.has('notes.txt')).toBe(true);
    expect(files.has('onnx/model.onnx')).toBe(true);
    const again = await publish(dir, repo, opts({ branch: 'onnx' }));
    expect(again.uploaded).toEqual([]);
    expect(again.branchCreated).toBe(false);
  });

  it('--create-pr opens a pull request instead of committing to main', async () => {
    const dir = await makeModelDir();
    const repo = newRepo();
    server.addRepo(repo, { 'notes.txt': 'x' });
    const mainHead = server.repos.get(repo)!.branches.get('main');
    const r = await publish(dir, repo, opts({ createPr: true }));
    expect(r.prUrl).toBe(`${server.url}/${repo}/discussions/1`);
    expect(server.repos.get(repo)!.branches.get('main')).toBe(mainHead);
    expect(server.filesAt(repo, 'refs/pr/1').has('onnx/model.onnx_data')).toBe(true);
    expect(server.requests.some((q) => q.url.includes('/commit/main?create_pr=1'))).toBe(true);
  });

  it('uploads large files in parts when the Hub asks for multipart', async () => {
    const dir = await makeModelDir();
    const big = Buffer.alloc(1_100_000);
    for (let i = 0; i < big.length; i++) big[i] = (i * 7) & 0xff;
    await writeFile(join(dir, 'onnx', 'model.onnx_data'), big);
    const repo = newRepo();
    await publish(dir, repo, opts());
    expect(sha256(server.filesAt(repo, 'main').get('onnx/model.onnx_data')!.content)).toBe(sha256(big));
    const parts = server.requests.filter((q) => q.method === 'PUT' && q.url.includes('/part/'));
    expect(parts).toHaveLength(4);
    expect(server.requests.some((q) => q.url.startsWith('/api/complete_multipart/'))).toBe(true);
  });

  it('skips LFS uploads the Hub already has (same bytes in another repo)', async () => {
    const dir = await makeModelDir();
    await publish(dir, newRepo(), opts());
    server.clearRequests();
    await publish(dir, newRepo(), opts());
    expect(server.requests.filter((q) => q.method === 'PUT')).toEqual([]);
  });

  it('shows a progress bar per uploaded file on stderr only', async () => {
    const dir = await makeModelDir();
    await writeFile(join(dir, 'onnx', 'model.onnx_data'), Buffer.from(`bytes the Hub has not seen yet ${Date.now()}`));
    const stderr = new CaptureStream(true);
    const stdout = vi.spyOn(process.stdout, 'write');
    try {
      await publish(dir, newRepo(), opts({ progressStream: stderr }));
      expect(stdout).not.toHaveBeenCalled();
    } finally {
      stdout.mockRestore();
    }
    expect(stderr.text()).toMatch(/onnx\/model\.onnx_data\s+100%/);
  });

  it('without a write token: HUB_AUTH saying a write token is needed', async () => {
    const dir = await makeModelDir();
    const read = await errorOf(publish(dir, 'bob/model', opts({ token: 'hf_read_bob' })));
    expect(read.code).toBe('HUB_AUTH');
    expect(read.message).toMatch(/write access/);
    const none = await errorOf(publish(dir, 'bob/model', { ...opts(), token: undefined }));
    expect(none.code).toBe('HUB_AUTH');
    expect(none.message).toMatch(/no token was given.*write access/);
    const other = await errorOf(publish(dir, 'alice/x', opts({ token: 'hf_write_carol' })));
    expect(other.code).toBe('HUB_AUTH');
  });

  it('a SCAP-pruned model: scap_config.json is uploaded and the card records the settings and perplexities', async () => {
    const dense = join(work, 'dense');
    await convert(join(FIXTURES, 'brown', 'jamba', 'checkpoint'), { outDir: dense });
    const text = join(work, 'text.txt');
    await writeFile(text, 'The jury said it did find that the city was well run.\nIt was a fine day in Atlanta, and the election was over.\n'.repeat(30));
    const pruned = join(work, 'pruned');
    await prune(dense, { outDir: pruned, calib: text, calibTokens: 512, window: 128, sparsity: '0.4', ppl: text });
    const repo = newRepo();
    const r = await publish(pruned, repo, opts());
    expect(r.uploaded).toContain('scap_config.json');
    const files = server.filesAt(repo, 'main');
    const card = files.get('README.md')!.content.toString();
    const e = (await loadSpec(pruned)).scap!.evaluation!;
    expect(card).toContain('## Pruning (SCAP)');
    expect(card).toContain('| method | SCAP (sequential calibration) |');
    expect(card).toContain(`| perplexity | ${e.dense.toFixed(3)} dense → ${e.pruned.toFixed(3)} pruned`);
    expect(card).toMatch(/\| expert_down \| 8 \| 40\.0 % \| 40\.\d % \| \d+\.\d % \| \d \|/);
    expect(JSON.parse(files.get('scap_config.json')!.content.toString())).toEqual((await loadSpec(pruned)).scap);
  });

  it('round trip: publish, then list and read the files back through openHubStore', async () => {
    const dir = await makeModelDir();
    const repo = newRepo();
    await publish(dir, repo, opts());
    const store = await openHubStore(repo, { ...hubInput(server, join(work, 'dl-cache')), log: captureLogger() });
    expect(await store.list()).toEqual(['.gitattributes', ...MODEL_FILES]);
    expect(JSON.parse(await store.readText('hubmoe.json'))).toEqual(tinySpec());
    const onnxData = await readFile(await store.download('onnx/model.onnx_data'));
    expect(sha256(onnxData)).toBe(sha256(ONNX_DATA));
    const source = await openCheckpoint(store);
    try {
      await source.prepare('model.safetensors');
      const embed = await source.read('embed.weight');
      expect(embed.length).toBe(32 * 8);
      expect(embed[0]).toBe(0.5);
      expect(embed[255]).toBe(255.5);
    } finally {
      await source.close();
    }
    // The round trip through convert and generation: test/hub/convert-hub.test.ts.
  });
});
