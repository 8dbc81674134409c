#!/usr/bin/env node
/**
 * Time per sampled token of the host-side sampler (runtime/sampling.ts pickToken) against a full sort of the
 * vocabulary (the algorithm it replaced: sampleBySorting, the same file's reference), side by side on the same rows: a 65536-token vocabulary,
 * rows of random logits with a standard deviation of 2 (flat-ish) and 6 (peaked), several option sets.
 *
 *   npm run build && node bench/sampling.mjs [--vocab 65536] [--tokens 40] [--json FILE]
 */
import { writeFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { makeRng, pickToken, sampleBySorting } from '../dist/runtime/sampling.js';

const fullSort = (logits, o, rng) => sampleBySorting(logits, logits.length, o, rng);

const { values } = parseArgs({ options: { vocab: { type: 'string', default: '65536' }, tokens: { type: 'string', default: '40' }, json: { type: 'string' } } });
const V = Number(values.vocab);
const N = Number(values.tokens);

// Normal(0, sd) logits from a seeded generator (Box–Muller).
function row(sd, seed) {
  const g = makeRng(seed);
  return Float32Array.from({ length: V }, () => sd * Math.sqrt(-2 * Math.log(1 - g())) * Math.cos(2 * Math.PI * g()));
}

const time = (fn) => {
  fn(0); // warm-up
  const t0 = performance.now();
  for (let s = 1; s <= N; s++) fn(s);
  return (performance.now() - t0) / N;
};

const results = [];
console.log(`vocabulary ${V}, ${N} tokens per cell, ms per token (same draws from both):`);
console.log('| logits | options | full sort | pickToken | speed-up |');
console.log('| --- | --- | --- | --- | --- |');
for (const sd of [2, 6]) {
  const base = row(sd, sd);
  for (const o of [{ temperature: 1 }, { temperature: 0.7, topP: 0.9 }, { temperature: 0.7, topK: 50 }, { temperature: 0.7, topK: 50, topP: 0.9 }]) {
    for (let s = 0; s < 5; s++) {
      if (fullSort(base.slice(), o, makeRng(s)) !== pickToken(base.slice(), V, [], o, makeRng(s))) throw new Error('the two samplers disagree');
    }
    const a = time((s) => fullSort(base.slice(), o, makeRng(s)));
    const b = time((s) => pickToken(base.slice(), V, [], o, makeRng(s)));
    results.push({ sd, options: o, fullSortMs: a, pickTokenMs: b, speedup: a / b });
    console.log(`| N(0, ${sd}) | ${JSON.stringify(o)} | ${a.toFixed(2)} | ${b.toFixed(2)} | ${(a / b).toFixed(1)}× |`);
  }
}
if (values.json) await writeFile(values.json, JSON.stringify(results, null, 2));
