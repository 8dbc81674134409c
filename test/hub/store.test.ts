/**
 * HubStore as the FileStore conversion reads: headers from ranged reads only (dry run / inspect),
 * then shard-by-shard downloads after which reads are local, the download plan, and progress bars
 * that go to stderr only.
 */
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { HubmoeError } from '../../src/errors.js';
import { planDownload } from '../../src/hub/plan.js';
import { createProgress } from '../../src/hub/progress.js';
import { openHubStore } from '../../src/hub/store.js';
import type { OpenHubStoreOptions } from '../../src/hub/store.js';
import { openCheckpoint } from '../../src/io/checkpoint.js';
import { CaptureStream, captureLogger, f32Entry, hubInput, makeTempDir, safetensorsBytes } from './helpers.js';
import { startHubServer } from './server.js';
import type { HubServer } from './server.js';

let server: HubServer;
let cacheDir: string;
let cleanup: () => Promise<void>;
let shard1: Buffer;
let shard2: Buffer;

const SHARD1 = 'model-00001-of-00002.safetensors';
const SHARD2 = 'model-00002-of-00002.safetensors';

beforeAll(async () => {
  server = await startHubServer();
  shard1 = await safetensorsBytes([f32Entry('backbone.embeddings.weight', [400, 256], 0), f32Entry('backbone.norm_f.weight', [256], 5)], { format: 'pt' });
  shard2 = await safetensorsBytes([f32Entry('lm_head.weight', [400, 256], 1)], { format: 'pt' });
  const index = {
    metadata: { total_size: 2 * 400 * 256 * 4 + 256 * 4 },
    weight_map: { 'backbone.embeddings.weight': SHARD1, 'backbone.norm_f.weight': SHARD1, 'lm_head.weight': SHARD2 },
  };
  server.addRepo('org/sharded', {
    'config.json': '{"model_type":"mamba"}',
    'generation_config.json': '{"eos_token_id":0}',
    'tokenizer.json': '{"version":"1.0"}',
    'tokenizer_config.json': '{}',
    'README.md': '# sharded',
    'model.safetensors.index.json': JSON.stringify(index),
    [SHARD1]: shard1,
    [SHARD2]: shard2,
    'pytorch_model.bin': Buffer.alloc(50_000, 1),
  });
});
afterAll(async () => server.close());

beforeEach(async () => {
  ({ dir: cacheDir, cleanup } = await makeTempDir('hubmoe-store-'));
  server.clearRequests();
  for (const k of Object.keys(server.faults)) delete (server.faults as Record<string, unknown>)[k];
});
afterEach(async () => cleanup());

const opts = (extra: OpenHubStoreOptions = {}): OpenHubStoreOptions => ({ ...hubInput(server, cacheDir), log: captureLogger(), retryDelayMs: 0, ...extra });
const shardRequests = (): typeof server.requests => server.requests.filter((r) => r.server === 'cdn' && /model-0000\d/.test(r.url));

describe('reading headers without downloading the weights (--dry-run, inspect)', () => {
  it('opens a sharded checkpoint with small ranged reads only', async () => {
    const store = await openHubStore('org/sharded', opts());
    const source = await openCheckpoint(store);
    expect(source.format).toBe('safetensors');
    expect(source.files).toEqual([SHARD1, SHARD2]);
    expect(source.names().sort()).toEqual(['backbone.embeddings.weight', 'backbone.norm_f.weight', 'lm_head.weight']);
    expect(source.info('lm_head.weight')).toMatchObject({ dtype: 'F32', shape: [400, 256], file: SHARD2 });

    const reads = shardRequests();
    expect(reads.length).toBeGreaterThan(0);
    for (const r of reads) expect(r.range, r.url).toMatch(/^bytes=\d+-\d+$/);
    const served = reads.reduce((n, r) => n + r.bytes, 0);
    expect(served).toBeLessThan(2 * 64 * 1024 + 1024);
    expect(served).toBeLessThan((shard1.length + shard2.length) / 3);
    // Nothing but the index reached the cache; the other weight format was never touched.
    const blobs = await readdir(join(cacheDir, 'models--org--sharded', 'blobs'));
    expect(blobs).toHaveLength(1);
    expect(server.requests.some((r) => r.url.includes('pytorch_model.bin'))).toBe(false);
    await source.close();
  });

  it('reads a tensor remotely when asked, with exactly the bytes requested beyond the read-ahead', async () => {
    const store = await openHubStore('org/sharded', opts({ readAheadBytes: 0 }));
    const source = await openCheckpoint(store);
    server.clearRequests();
    const norm = await source.read('backbone.norm_f.weight');
    expect(Array.from(norm.subarray(0, 3))).toEqual([5, 6, 7]);
    expect(shardRequests()).toHaveLength(1);
    expect(shardRequests()[0]!.bytes).toBe(256 * 4);
    await source.close();
  });

  it('still reads headers from a server that ignores Range, with a warning', async () => {
    server.faults.ignoreRange = true;
    const log = captureLogger();
    const store = await openHubStore('org/sharded', opts({ log }));
    const source = await openCheckpoint(store);
    expect(source.names()).toHaveLength(3);
    expect(log.text()).toMatch(/ignores byte ranges/);
    await source.close();
  });

  it('reports a read past the end as CORRUPT_FILE naming the file', async () => {
    const store = await openHubStore('org/sharded', opts());
    const src = await store.open(SHARD2);
    await expect(src.read(shard2.length - 4, 8)).rejects.toMatchObject({ code: 'CORRUPT_FILE', message: expect.stringContaining(SHARD2) });
    await expect(store.open('missing.safetensors')).rejects.toBeInstanceOf(HubmoeError);
  });

  it('plans the download: config, tokenizer, index and shards, with bytes', async () => {
    const store = await openHubStore('org/sharded', opts());
    const plan = await planDownload(store);
    expect(plan.commit).toBe(store.commit);
    expect(plan.format).toBe('safetensors');
    expect(plan.files.map((f) => [f.path, f.role])).toEqual([
      ['config.json', 'config'],
      ['generation_config.json', 'generation'],
      ['tokenizer.json', 'tokenizer'],
      ['tokenizer_config.json', 'tokenizer'],
      ['model.safetensors.index.json', 'index'],
      [SHARD1, 'weights'],
      [SHARD2, 'weights'],
    ]);
    expect(plan.files.find((f) => f.path === SHARD1)!.size).toBe(shard1.length);
    expect(plan.files.find((f) => f.path === 'model.safetensors.index.json')!.cached).toBe(true);
    expect(plan.downloadBytes).toBe(plan.totalBytes - plan.files.find((f) => f.role === 'index')!.size);
  });
});

describe('converting shard by shard', () => {
  it('downloads each shard on prepare(), after which reads are local', async () => {
    const store = await openHubStore('org/sharded', opts());
    const source = await openCheckpoint(store);
    for (const file of source.files) {
      await source.prepare(file);
      const before = server.requests.length;
      for (const name of source.names().filter((n) => source.info(n).file === file)) {
        const t = await source.read(name);
        expect(t.length).toBe(source.info(name).shape.reduce((a, b) => a * b, 1));
      }
      expect(server.requests.length).toBe(before);
    }
    try {
      const emb = await source.read('backbone.embeddings.weight');
      expect(emb[2 * 256]).toBe(2 * 256);
      const head = await source.read('lm_head.weight');
      expect(head[head.length - 1]).toBe(400 * 256);
      expect(await store.isCached(SHARD1)).toBe(true);
    } finally {
      await source.close();
    }
  });

  it('downloads a file once when asked for it twice at the same time', async () => {
    const store = await openHubStore('org/sharded', opts());
    await Promise.all([store.prepare(SHARD1), store.prepare(SHARD1), store.download(SHARD1)]);
    expect(shardRequests()).toHaveLength(1);
  });
});

describe('progress bars', () => {
  it('draws one bar per file on the given stream (stderr) and never writes to stdout', async () => {
    const stderr = new CaptureStream(true);
    const stdout = vi.spyOn(process.stdout, 'write');
    try {
      const store = await openHubStore('org/sharded', opts({ progressStream: stderr }));
      expect(store.files().length).toBeGreaterThan(0);
      await store.prepare(SHARD1);
      await store.prepare(SHARD2);
      expect(stdout).not.toHaveBeenCalled();
    } finally {
      stdout.mockRestore();
    }
    const text = stderr.text();
    const finished = text.split('\n').filter((l) => l.includes('100%'));
    expect(finished.some((l) => l.includes(SHARD1))).toBe(true);
    expect(finished.some((l) => l.includes(SHARD2))).toBe(true);
    expect(text).toContain('\x1b[36m'); // colour on a terminal
  });

  it('draws nothing with HF_HUB_DISABLE_PROGRESS_BARS, off a terminal, or with NO_COLOR draws no colour', async () => {
    const tty = new CaptureStream(true);
    const store = await openHubStore('org/sharded', opts({ progressStream: tty, env: { HF_HUB_DISABLE_PROGRESS_BARS: '1' } }));
    await store.prepare(SHARD1);
    expect(tty.text()).toBe('');

    const pipe = new CaptureStream(false);
    const again = await openHubStore('org/sharded', opts({ progressStream: pipe, cacheDir: join(cacheDir, 'second') }));
    await again.prepare(SHARD1);
    expect(pipe.text()).toBe('');

    const plain = new CaptureStream(true);
    const third = await openHubStore('org/sharded', opts({ progressStream: plain, env: { NO_COLOR: '1' }, cacheDir: join(cacheDir, 'third') }));
    await third.prepare(SHARD1);
    expect(plain.text()).toContain('100%');
    expect(plain.text()).not.toContain('\x1b[36m');
  });

  it('renders size, percentage and rate', () => {
    const stream = new CaptureStream(true);
    let now = 0;
    const bar = createProgress({ enabled: true, stream, now: () => now, intervalMs: 0 }).start('onnx/model.onnx_data', 2_000_000);
    now = 1000;
    bar.tick(1_000_000);
    expect(stream.text()).toMatch(/onnx\/model\.onnx_data\s+50% .* 1\.00 MB\/2\.00 MB 1\.00 MB\/s 00:01/);
    bar.done();
    expect(stream.text().endsWith('\n')).toBe(true);
  });
});
