/**
 * convert from the Hub (the emulator): a repo id converts like a local dir, shard by shard into the
 * Python-compatible cache, with the commit sha recorded; --dry-run reads only safetensors headers;
 * HF_HUB_OFFLINE works from the cache; and a converted model dir published to the Hub downloads
 * back and runs (publish → convert round trip).
 */
import { execFile } from 'node:child_process';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { convert } from '../../src/convert.js';
import { HubmoeError } from '../../src/errors.js';
import { openHubStore } from '../../src/hub/store.js';
import { publish } from '../../src/hub/publish.js';
import { loadModel } from '../../runtime/model.js';
import { PARITY, ROOT, Reference, fixture, relError } from '../helpers.js';
import { captureLogger, hubInput, makeTempDir } from './helpers.js';
import { startHubServer } from './server.js';
import type { HubServer } from './server.js';

let server: HubServer;
let work: string;
let cleanup: () => Promise<void>;
let commit: string;

async function folder(dir: string): Promise<Record<string, Uint8Array>> {
  const out: Record<string, Uint8Array> = {};
  for (const f of await readdir(dir)) out[f] = await readFile(join(dir, f));
  return out;
}

beforeAll(async () => {
  server = await startHubServer();
  ({ dir: work, cleanup } = await makeTempDir('hubmoe-convert-hub-'));
  const files = await folder(fixture('jamba-odd', 'checkpoint'));
  // A second weight format the conversion must not download.
  files['pytorch_model.bin'] = new Uint8Array(300_000);
  files['README.md'] = new TextEncoder().encode('# jamba-odd\n');
  commit = server.addRepo('ai21labs/jamba-odd', files);
});
afterAll(async () => {
  await server.close();
  await cleanup();
});

const hub = (cache: string, extra = {}) => {
  const h = hubInput(server, cache);
  return { endpoint: h.endpoint, cacheDir: h.cacheDir, progress: false, log: captureLogger(), ...extra };
};

describe('convert <repo-id>', () => {
  it('--dry-run plans from remote safetensors headers without downloading weights', async () => {
    const cache = join(work, 'cache-dry');
    server.clearRequests();
    const res = await convert('ai21labs/jamba-odd', { ...hub(cache), outDir: join(work, 'dry'), dryRun: true });
    expect(res.plan.files).toHaveLength(12);
    expect(res.plan.files.every((f) => (f.bytes ?? 0) > 0)).toBe(true);
    expect(res.spec.source).toMatchObject({ repo: 'ai21labs/jamba-odd', revision: 'main', commit });
    const weightReads = server.requests.filter((r) => /\.safetensors$/.test(r.url.split('?')[0]!) && r.method === 'GET');
    expect(weightReads.length).toBeGreaterThan(0);
    // Only ranged reads of the weights (headers, with a 64 KiB read-ahead at most), never whole files.
    for (const r of weightReads) {
      expect(r.range).toMatch(/^bytes=\d+-\d+$/);
      expect(r.bytes).toBeLessThanOrEqual(64 * 1024);
    }
    expect(server.requests.some((r) => r.url.includes('pytorch_model.bin'))).toBe(false);
    const snapshot = join(cache, 'models--ai21labs--jamba-odd', 'snapshots', commit);
    const cached = await readdir(snapshot);
    expect(cached.some((f) => f.endsWith('.safetensors'))).toBe(false);
  });

  it('converts shard by shard into the shared cache and matches the reference', async () => {
    const cache = join(work, 'cache');
    const out = join(work, 'out');
    const res = await convert('ai21labs/jamba-odd', { ...hub(cache), outDir: out });
    const spec = JSON.parse(await readFile(join(out, 'hubmoe.json'), 'utf-8'));
    expect(spec.source).toMatchObject({ repo: 'ai21labs/jamba-odd', revision: 'main', commit, format: 'safetensors' });
    expect(spec.source.files).toHaveLength(12);
    const snapshot = join(cache, 'models--ai21labs--jamba-odd', 'snapshots', commit);
    const cached = (await readdir(snapshot)).sort();
    // What conversion needs, and nothing else: no README, no second weight format.
    expect(cached).toEqual([...res.plan.files.map((f) => f.path), 'config.json', 'generation_config.json', 'model.safetensors.index.json'].sort());
    expect(await readFile(join(cache, 'models--ai21labs--jamba-odd', 'refs', 'main'), 'utf-8')).toBe(commit);
    const model = await loadModel(out, { threads: 1 });
    const ref = await Reference.open('jamba-odd');
    const got = await model.forward(await ref.rows('input_ids'));
    expect(relError(got.data, (await ref.floats('logits')).data)).toBeLessThanOrEqual(PARITY);
    await model.dispose();
    await ref.close();

    // Offline, from the cache alone: no request reaches the server.
    server.clearRequests();
    const again = await convert('ai21labs/jamba-odd', { ...hub(cache, { offline: true }), outDir: join(work, 'out-offline') });
    expect(again.spec.source.commit).toBe(commit);
    expect(server.requests).toEqual([]);
  });

  it('a missing repo and a missing revision are HubmoeErrors saying what is wrong', async () => {
    const cache = join(work, 'cache-missing');
    const e1 = await convert('nobody/nothing', { ...hub(cache), outDir: join(work, 'x') }).catch((e: unknown) => e);
    expect(e1).toBeInstanceOf(HubmoeError);
    expect((e1 as HubmoeError).code).toBe('HUB_NOT_FOUND');
    const e2 = await convert('ai21labs/jamba-odd', { ...hub(cache), revision: 'v9', outDir: join(work, 'x') }).catch((e: unknown) => e);
    expect((e2 as HubmoeError).code).toBe('HUB_NOT_FOUND');
    expect((e2 as HubmoeError).message).toMatch(/v9/);
    expect(await readdir(work)).not.toContain('x');
  });
});

describe('the CLI with a Hub source', () => {
  it('inspect --json and convert --dry-run take --endpoint / --cache-dir and keep stdout for the result', async () => {
    const cache = join(work, 'cache-cli');
    const run = (args: string[]) =>
      new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
        execFile(process.execPath, [join(ROOT, 'bin', 'hubmoe.js'), ...args, '--endpoint', server.url, '--cache-dir', cache], { env: { ...process.env, HF_TOKEN: '', NO_COLOR: '1' } }, (err, stdout, stderr) =>
          resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
        );
      });
    const inspect = await run(['inspect', 'ai21labs/jamba-odd', '--json']);
    expect(inspect.code).toBe(0);
    expect(JSON.parse(inspect.stdout).spec.source).toMatchObject({ repo: 'ai21labs/jamba-odd', commit });
    const dry = await run(['convert', 'ai21labs/jamba-odd', '--out', join(work, 'cli-out'), '--dry-run']);
    expect(dry.code).toBe(0);
    expect(dry.stdout).toMatch(/family\s+jamba/);
    expect(dry.stdout).toMatch(/files\s+12/);
    const missing = await run(['inspect', 'nobody/nothing']);
    expect(missing.code).toBe(1);
    expect(missing.stdout).toBe('');
    expect(missing.stderr).toMatch(/nobody\/nothing/);
  });
});

describe('publish → download → run', () => {
  it('a converted model dir published to the Hub comes back identical and generates the same tokens', async () => {
    const out = join(work, 'demo');
    await convert(fixture('jamba-demo', 'checkpoint'), { outDir: out, dtype: 'both' });
    const pub = await publish(out, 'alice/jamba-demo-onnx', { ...hubInput(server, join(work, 'pub-cache'), { token: 'hf_write_alice' }), log: captureLogger(), retryDelayMs: 0 });
    expect(pub.uploaded).toContain('onnx/model.onnx_data');
    const card = await readFile(join(out, 'README.md'), 'utf-8');
    expect(card).toMatch(/library_name: transformers\.js/);
    expect(card).toMatch(/- jamba/);
    const store = await openHubStore('alice/jamba-demo-onnx', { ...hubInput(server, join(work, 'dl-cache')), log: captureLogger() });
    for (const f of await store.list()) await store.download(f);
    const downloaded = store.snapshotDir;
    for (const f of ['hubmoe.json', 'onnx/model.onnx', 'onnx/model.onnx_data', 'tokenizer.json']) {
      expect(Buffer.compare(await readFile(join(downloaded, f)), await readFile(join(out, f)))).toBe(0);
    }
    const a = await loadModel(out, { threads: 1 });
    const b = await loadModel(downloaded, { threads: 1 });
    const ga = await a.generate([[1, 40, 41, 42]], { maxNewTokens: 6, ignoreEos: true });
    const gb = await b.generate([[1, 40, 41, 42]], { maxNewTokens: 6, ignoreEos: true });
    expect(gb.tokens).toEqual(ga.tokens);
    await a.dispose();
    await b.dispose();
  });
});
