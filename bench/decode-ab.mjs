#!/usr/bin/env node
/**
 * Decode (batch 1, or `--batch N` rows of different prompts) of several model dirs on the GPU, interleaved: every model is loaded at once, then
 * `rounds` times each one decodes `steps` cached steps after a `prompt`-token prefill, in turn, so
 * that drifts of the machine hit all of them alike. A round's time per step is the time from the
 * prefill's token to the last one over the steps between (greedy decoding in the addon hands tokens
 * over a chunk at a time, so single steps are not seen); prints each model's median over the rounds,
 * and the ratio to the first model.
 *
 *   npm run build && node bench/decode-ab.mjs [--device cuda] [--rounds 5] [--steps 32] [--prompt 64] [--batch 1] [--json FILE] LABEL=DIR[#HOW[,HOW]] …
 *
 * HOW picks how a model runs: dynamic (the dynamic graph), static (the static-cache graph) or cuda-graph (the
 * static-cache graph with CUDA graphs of the decode step), default what loadModel picks; and `steps` for one
 * call from JavaScript per decode step (loadModel's decodeLoop: false). One dir may appear several times.
 */
import { decodeMsPerStep } from './decode-time.mjs';
import { writeFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { graphChoice, loadModel } from '../dist/runtime/model.js';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { device: { type: 'string', default: 'cuda' }, rounds: { type: 'string', default: '5' }, steps: { type: 'string', default: '32' }, prompt: { type: 'string', default: '64' }, batch: { type: 'string', default: '1' }, json: { type: 'string' } },
});
const models = [];
for (const p of positionals) {
  const [label, spec] = p.includes('=') ? [p.slice(0, p.indexOf('=')), p.slice(p.indexOf('=') + 1)] : [p, p];
  const [dir, how] = spec.includes('#') ? [spec.slice(0, spec.indexOf('#')), spec.slice(spec.indexOf('#') + 1).split(',')] : [spec, []];
  const graph = how.find((h) => h !== 'steps');
  const opts = { device: values.device, ...graphChoice(graph), ...(how.includes('steps') ? { decodeLoop: false } : {}) };
  models.push({ label, dir, model: await loadModel(dir, opts), times: [] });
}
let seed = 99;
const rand = (V) => {
  seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
  return 3 + (seed % (V - 3));
};
const steps = Number(values.steps);
const P = Number(values.prompt);
const batch = Number(values.batch);
if (!Number.isInteger(batch) || batch < 1) throw new Error(`--batch must be a positive integer, got ${values.batch}`);
async function decode(m) {
  const V = m.model.spec.vocab.size;
  const prompt = Array.from({ length: batch }, () => Array.from({ length: P }, () => rand(V)));
  return decodeMsPerStep(m.model, prompt, steps);
}
for (const m of models) await decode(m); // warm-up
for (let r = 0; r < Number(values.rounds); r++) {
  for (const m of models) m.times.push(await decode(m));
  process.stderr.write(`round ${r + 1}: ${models.map((m) => `${m.label} ${m.times[m.times.length - 1].toFixed(2)} ms`).join(', ')}\n`);
}
function median(a) {
  const s = [...a].sort((x, y) => x - y);
  return s[Math.floor(s.length / 2)];
}
const base = median(models[0].times);
const rows = models.map((m) => ({ label: m.label, batch, msPerStep: median(m.times), rounds: m.times.length, steps, speedup: base / median(m.times) }));
console.log(`| model | decode, batch ${batch} (ms/step, median of rounds) | vs first |\n| --- | --- | --- |`);
for (const r of rows) console.log(`| ${r.label} | ${r.msPerStep.toFixed(3)} (${r.rounds} rounds of ${r.steps} steps) | ${r.speedup.toFixed(2)}× |`);
if (values.json) await writeFile(values.json, JSON.stringify(rows, null, 2));
for (const m of models) await m.model.dispose();
