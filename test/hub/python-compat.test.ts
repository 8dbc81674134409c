/**
 * The cache layout against Python's huggingface_hub, the reference for it. Python downloaded the
 * same files from this emulator into a cache; that cache is committed as fixtures/hub/python-cache
 * (with relative symlinks, as Python wrote them) and described, commit sha abstracted, in
 * fixtures/hub/python-cache.json. The tests check that hubmoe writes exactly that layout, and that
 * hubmoe reads Python's cache offline.
 *
 * To re-record (needs a Python with huggingface_hub; HUBMOE_PYTHON names it, default python3):
 *   HUBMOE_RECORD_PYTHON_CACHE=1 npx vitest run test/hub/python-compat.test.ts
 * Recording also checks that Python reads hubmoe's cache offline.
 */
import { execFile, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { cp, lstat, mkdir, readFile, readdir, readlink, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openHubStore } from '../../src/hub/store.js';
import { captureLogger, hubInput, makeTempDir } from './helpers.js';
import { startHubServer } from './server.js';
import type { HubServer } from './server.js';

const PYTHON = process.env.HUBMOE_PYTHON ?? 'python3';
const RECORD = process.env.HUBMOE_RECORD_PYTHON_CACHE === '1';
const GOLDEN_DIR = join(import.meta.dirname, '..', '..', 'fixtures', 'hub');
const REPO = 'org/shared';
const FOLDER = 'models--org--shared';

/** Runs Python's hf_hub_download (asynchronously: the emulator answers from this same process). */
function pythonDownload(endpoint: string, cacheDir: string, home: string, repo: string, revision: string, files: string[], offline = false): Promise<string> {
  const script = [
    'import sys',
    'from huggingface_hub import hf_hub_download',
    'ep, cache, repo, rev, offline = sys.argv[1:6]',
    'for f in sys.argv[6:]:',
    '    print(hf_hub_download(repo, f, revision=rev, cache_dir=cache, endpoint=ep, local_files_only=(offline == "1")))',
  ].join('\n');
  const env = { ...process.env, HF_HOME: home, HF_HUB_DISABLE_TELEMETRY: '1', HF_HUB_DISABLE_PROGRESS_BARS: '1', HF_HUB_DISABLE_XET: '1', HF_TOKEN: '' };
  return new Promise((resolve, reject) => {
    execFile(PYTHON, ['-c', script, endpoint, cacheDir, repo, revision, offline ? '1' : '0', ...files], { env, encoding: 'utf-8' }, (err, stdout, stderr) => {
      if (err) reject(new Error(`python failed: ${stderr}`));
      else resolve(stdout);
    });
  });
}

/** Every entry of a cache except Python's lock files: path → link target or content hash. */
async function describeCache(root: string, rel = ''): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const e of await readdir(join(root, rel), { withFileTypes: true })) {
    const p = rel ? `${rel}/${e.name}` : e.name;
    if (p === '.locks') continue;
    const full = join(root, p);
    const st = await lstat(full);
    if (st.isSymbolicLink()) out[p] = `-> ${await readlink(full)}`;
    else if (st.isDirectory()) Object.assign(out, await describeCache(root, p));
    // refs hold a commit sha (abstracted later); other files are described by their content hash.
    else if (p.includes('/refs/')) out[p] = `ref ${(await readFile(full, 'utf-8')).trim()}`;
    else out[p] = createHash('sha256').update(await readFile(full)).digest('hex');
  }
  return out;
}


/** The cache description with the commit sha (random in the emulator) replaced by `<commit>`. */
function abstractCommit(desc: Record<string, string>, commit: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(desc)) out[k.split(commit).join('<commit>')] = v.split(commit).join('<commit>');
  return out;
}

describe('the cache layout is Python huggingface_hub\'s', () => {
  let server: HubServer;
  let dir: string;
  let cleanup: () => Promise<void>;
  const files = ['config.json', 'model.safetensors', 'tokenizer/tokenizer.json', 'nested/deeper/weights.bin'];

  beforeAll(async () => {
    server = await startHubServer();
    const big = Buffer.alloc(200_000);
    for (let i = 0; i < big.length; i++) big[i] = (i * 13) & 0xff;
    server.addRepo(REPO, {
      'config.json': '{"model_type":"jamba"}',
      'model.safetensors': big,
      'tokenizer/tokenizer.json': '{"version":"1.0"}',
      'nested/deeper/weights.bin': Buffer.from([0, 1, 2, 3]),
    });
    server.tag(REPO, 'v1.0', 'main');
    ({ dir, cleanup } = await makeTempDir('hubmoe-pycompat-'));
    if (RECORD) {
      const probe = spawnSync(PYTHON, ['-c', 'import huggingface_hub; print(huggingface_hub.__version__)'], { encoding: 'utf-8' });
      if (probe.status !== 0) throw new Error(`recording needs ${PYTHON} with huggingface_hub: ${probe.stderr}`);
      const golden: Record<string, unknown> = { huggingface_hub: probe.stdout.trim(), revisions: {} };
      const pyCache = join(GOLDEN_DIR, 'python-cache');
      await rm(pyCache, { recursive: true, force: true });
      for (const revision of ['main', 'v1.0']) {
        const one = join(dir, `py-${revision}`);
        await pythonDownload(server.url, one, join(dir, 'home'), REPO, revision, files);
        (golden.revisions as Record<string, unknown>)[revision] = abstractCommit(await describeCache(one), commitOf(one, revision));
        if (revision === 'main') {
          await cp(one, pyCache, { recursive: true, verbatimSymlinks: true });
          await rm(join(pyCache, '.locks'), { recursive: true, force: true });
        }
      }
      await mkdir(GOLDEN_DIR, { recursive: true });
      await writeFile(join(GOLDEN_DIR, 'python-cache.json'), JSON.stringify(golden, null, 2) + '\n');
    }
  });
  afterAll(async () => {
    await cleanup();
    await server.close();
  });

  for (const revision of ['main', 'v1.0']) {
    it(`hubmoe writes the cache Python writes, for revision ${revision}`, async () => {
      const golden = JSON.parse(await readFile(join(GOLDEN_DIR, 'python-cache.json'), 'utf-8')) as { revisions: Record<string, Record<string, string>> };
      const jsCache = join(dir, `js-${revision}`);
      const store = await openHubStore(REPO, { ...hubInput(server, jsCache), revision, log: captureLogger() });
      for (const f of files) await store.download(f);
      const js = abstractCommit(await describeCache(jsCache), store.commit);
      expect(Object.keys(js)).toEqual(
        expect.arrayContaining(['CACHEDIR.TAG', `${FOLDER}/refs/${revision}`, `${FOLDER}/snapshots/<commit>/nested/deeper/weights.bin`]),
      );
      expect(js).toEqual(golden.revisions[revision]);
    });
  }

  it('hubmoe reads a cache Python wrote, offline', async () => {
    const store = await openHubStore(REPO, { ...hubInput(server, join(GOLDEN_DIR, 'python-cache')), offline: true, log: captureLogger() });
    expect(await store.readText('config.json')).toBe('{"model_type":"jamba"}');
    expect(await store.readText('tokenizer/tokenizer.json')).toBe('{"version":"1.0"}');
    const src = await store.open('model.safetensors');
    expect((await src.read(1000, 4)).join(',')).toBe([1000, 1001, 1002, 1003].map((i) => (i * 13) & 0xff).join(','));
    await src.close();
    expect(await store.list()).toEqual([...files].sort());
  });

  // Needs Python itself, so it runs while recording (not registered otherwise).
  if (RECORD) {
    it('Python reads a cache hubmoe wrote, offline', async () => {
      const jsCache = join(dir, 'js-main');
      const out = await pythonDownload('http://127.0.0.1:9', jsCache, join(dir, 'home'), REPO, 'main', files, true);
      expect(out.trim().split('\n')).toHaveLength(files.length);
    });
  }
});

/** The commit sha a cache's refs/<revision> names. */
function commitOf(cache: string, revision: string): string {
  return readFileSync(join(cache, FOLDER, 'refs', revision), 'utf-8').trim();
}
