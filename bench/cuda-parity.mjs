#!/usr/bin/env node
/**
 * fp16 models on ONNX Runtime's CUDA execution provider against the fixtures' references: converts
 * each fixture with --dtype fp16, runs it with loadModel(dir, { device: 'cuda' }), and prints the max
 * relative logits error, whether greedy decoding gives the reference tokens, and cached decode vs a
 * full recompute. Needs a GPU and onnxruntime-node's CUDA provider libraries (see docs/cuda.md).
 *
 *   npm run build && node bench/cuda-parity.mjs [--target portable|fused] [--backend native|onnxruntime-node]
 *       [--graph dynamic|static|cuda-graph] [--json FILE] [fixture …]
 *
 * --graph: the dynamic graph, the static-cache graph, or the static-cache graph with CUDA graphs of the decode
 * step (default: what loadModel picks). With the static-cache graph, generation runs twice and the second run
 * (graphs replayed) must repeat the first.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { convert } from '../dist/src/convert.js';
import { graphChoice, loadModel } from '../dist/runtime/model.js';
import { SafetensorsFile } from '../dist/src/io/safetensors.js';
import { toFloat32, toIntArray } from '../dist/src/io/dtype.js';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { json: { type: 'string' }, device: { type: 'string', default: 'cuda' }, target: { type: 'string', default: 'portable' }, backend: { type: 'string' }, graph: { type: 'string' } },
});
const root = new URL('..', import.meta.url).pathname;
const fixtures = positionals.length
  ? positionals
  : ['jamba-demo', 'jamba-odd', 'jamba-dense', 'blackmamba-glu-bias', 'blackmamba-plain', 'moe-mamba', 'mamba-hf', 'mamba-hf-bias'];
const graphOptions = graphChoice(values.graph);
const dir = await mkdtemp(join(tmpdir(), 'hubmoe-cuda-'));

function rel(got, want) {
  let d = 0, s = 0;
  for (let i = 0; i < want.length; i++) {
    d = Math.max(d, Math.abs(got[i] - want[i]));
    s = Math.max(s, Math.abs(want[i]));
  }
  return d / s;
}

const results = [];
for (const name of fixtures) {
  const ref = await SafetensorsFile.open(join(root, 'fixtures', name, 'reference.safetensors'));
  const rows = async (t) => {
    const e = ref.entry(t);
    const flat = toIntArray(e.dtype, await ref.readBytes(t));
    const c = e.shape[e.shape.length - 1];
    return Array.from({ length: flat.length / c }, (_, r) => flat.slice(r * c, (r + 1) * c));
  };
  const floats = async (t) => toFloat32('F32', await ref.readBytes(t));
  const out = join(dir, name);
  const r = { fixture: name };
  try {
    await convert(join(root, 'fixtures', name, 'checkpoint'), { outDir: out, dtype: 'fp16', target: values.target });
    const model = await loadModel(out, { device: values.device, dtype: 'fp16', ...(values.backend ? { backend: values.backend } : {}), ...graphOptions });
    r.backend = model.backendName;
    r.graph = model.graph;
    const logits = await model.forward(await rows('input_ids'));
    r.logits_rel = rel(logits.data, await floats('logits'));
    const prompt = await rows('greedy_prompt');
    const want = (await rows('greedy_tokens'))[0];
    const gen = await model.generate(prompt, { maxNewTokens: want.length, ignoreEos: true, outputLogits: true });
    r.greedy_equal = JSON.stringify(gen.tokens[0]) === JSON.stringify(want);
    r.greedy_first_diff = gen.tokens[0].findIndex((t, i) => t !== want[i]);
    // Without logits asked for, greedy tokens come from the graph's next_token output where it has one (fused static).
    const plain = await model.generate(prompt, { maxNewTokens: want.length, ignoreEos: true });
    r.plain_greedy_equal = JSON.stringify(plain.tokens[0]) === JSON.stringify(gen.tokens[0]);
    const steps = await floats('greedy_step_logits');
    const V = steps.length / want.length;
    const ours = new Float32Array(steps.length);
    gen.logits.forEach((l, i) => ours.set(l, i * V));
    r.step_logits_rel = r.greedy_equal ? rel(ours, steps) : null;
    const full = await model.forward([[...prompt[0], ...gen.tokens[0]]]);
    const P = prompt[0].length;
    r.cached_vs_recompute_rel = rel(ours, full.data.subarray((P - 1) * V, (P - 1 + want.length) * V));
    if (model.graph !== 'dynamic') {
      const again = await model.generate(prompt, { maxNewTokens: want.length, ignoreEos: true, outputLogits: true });
      const second = new Float32Array(steps.length);
      again.logits.forEach((l, i) => second.set(l, i * V));
      r.repeat_rel = rel(second, ours);
    }
    await model.dispose();
  } catch (err) {
    r.error = String(err?.message ?? err);
  }
  await ref.close();
  results.push(r);
  console.error(JSON.stringify(r));
}
await rm(dir, { recursive: true, force: true });
console.log(`target ${values.target}, backend ${results[0]?.backend ?? '?'}, graph ${results[0]?.graph ?? '?'}`);
console.log('| fixture | logits rel. error | greedy tokens | step logits rel. error | cached vs recompute | second generation vs first | greedy without logits |');
console.log('| --- | --- | --- | --- | --- | --- | --- |');
const f = (x) => (x === null || x === undefined ? '—' : x.toExponential(1));
for (const r of results) {
  if (r.error) console.log(`| ${r.fixture} | error: ${r.error.slice(0, 120)} | | | | | |`);
  else console.log(`| ${r.fixture} | ${f(r.logits_rel)} | ${r.greedy_equal ? 'equal' : `differ from step ${r.greedy_first_diff}`} | ${f(r.step_logits_rel)} | ${f(r.cached_vs_recompute_rel)} | ${r.repeat_rel === undefined ? '—' : f(r.repeat_rel)} | ${r.plain_greedy_equal ? 'same tokens' : 'differ'} |`);
}
if (values.json) await writeFile(values.json, JSON.stringify(results, null, 2));
