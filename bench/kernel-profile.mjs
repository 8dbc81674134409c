#!/usr/bin/env node
/**
 * GPU time of one decode step, kernel by kernel, measured with Nsight Compute (ncu) on the static-cache graph
 * run without CUDA graphs (the same kernels a replayed graph launches, one by one, so ncu can time each).
 *
 *   ncu --metrics gpu__time_duration.sum --csv --print-units base \
 *       node bench/kernel-profile.mjs run --model DIR [--batch 1] > KERNELS.csv     # prefill + 2 decode steps
 *   node bench/kernel-profile.mjs summary KERNELS.csv [--step-ms 3.17] [--top 25] [--json FILE]
 *
 * `summary` finds the decode step as the longest run of kernels repeated at the end of the trace (the two
 * identical decode steps), adds up their GPU time per kernel, and, given the measured time of a step
 * (--step-ms, e.g. from bench/decode-ab.mjs), says how much of the step is not kernel time (host work and
 * the gaps between kernels).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { model: { type: 'string' }, prompt: { type: 'string', default: '16' }, batch: { type: 'string', default: '1' }, 'step-ms': { type: 'string' }, top: { type: 'string', default: '25' }, json: { type: 'string' } },
});
const mode = positionals[0];

if (mode === 'run') {
  const { loadModel } = await import('../dist/runtime/model.js');
  const model = await loadModel(values.model, { device: 'cuda', staticCache: true, cudaGraph: false });
  const V = model.spec.vocab.size;
  const prompts = Array.from({ length: Number(values.batch) }, (_, b) => Array.from({ length: Number(values.prompt) }, (_, i) => 3 + ((i * 7919 + b * 104729) % (V - 3))));
  await model.generate(prompts, { maxNewTokens: 3, ignoreEos: true });
  await model.dispose();
} else if (mode === 'summary') {
  const lines = readFileSync(positionals[1], 'utf-8').split('\n').filter((l) => l.startsWith('"'));
  const parse = (l) => l.slice(1, -1).split('","');
  const head = parse(lines[0]);
  const col = (n) => head.indexOf(n);
  const [iName, iUnit, iValue, iMetric] = [col('Kernel Name'), col('Metric Unit'), col('Metric Value'), col('Metric Name')];
  const scale = { ns: 1e-3, nsecond: 1e-3, us: 1, usecond: 1, ms: 1e3, msecond: 1e3, s: 1e6, second: 1e6 };
  const kernels = lines
    .slice(1)
    .map(parse)
    .filter((r) => r[iMetric] === 'gpu__time_duration.sum')
    .map((r) => ({ name: r[iName], us: Number(r[iValue].replace(/,/g, '')) * (scale[r[iUnit]] ?? NaN) }));
  const names = kernels.map((k) => k.name);
  let N = 0;
  for (let n = Math.floor(names.length / 2); n >= 1; n--) {
    let same = true;
    for (let i = 1; i <= n && same; i++) same = names[names.length - i] === names[names.length - n - i];
    if (same) {
      N = n;
      break;
    }
  }
  if (!N) throw new Error('no repeated decode step found at the end of the trace');
  const step = kernels.slice(-N);
  // The kernel's name without its parameter list; template arguments kept for hubmoe's own kernels.
  const short = (s) => {
    const base = s.replace(/^void /, '').replace(/\(.*$/, '');
    return (base.startsWith('hubmoe') ? base : base.replace(/<.*$/, '')).replace(/\|/g, '/').slice(0, 90);
  };
  const agg = new Map();
  for (const k of step) {
    const a = agg.get(short(k.name)) ?? { us: 0, count: 0 };
    a.us += k.us;
    a.count += 1;
    agg.set(short(k.name), a);
  }
  const total = step.reduce((a, k) => a + k.us, 0);
  const rows = [...agg].sort((a, b) => b[1].us - a[1].us);
  console.log(`decode step: ${N} kernels, ${(total / 1000).toFixed(3)} ms of kernel time`);
  if (values['step-ms']) {
    const ms = Number(values['step-ms']);
    console.log(`measured step ${ms.toFixed(2)} ms: ${(ms - total / 1000).toFixed(3)} ms outside kernels (host work, launch gaps)`);
  }
  const small = step.filter((k) => k.us < 5);
  console.log(`kernels under 5 µs: ${small.length}, ${(small.reduce((a, k) => a + k.us, 0) / 1000).toFixed(3)} ms`);
  console.log('| kernel | launches | µs | share |');
  console.log('| --- | --- | --- | --- |');
  for (const [name, a] of rows.slice(0, Number(values.top))) console.log(`| ${name} | ${a.count} | ${a.us.toFixed(1)} | ${((100 * a.us) / total).toFixed(1)} % |`);
  if (values.json) writeFileSync(values.json, JSON.stringify({ kernels: N, totalUs: total, step, byKernel: Object.fromEntries(rows) }, null, 2));
} else {
  console.error('usage: node bench/kernel-profile.mjs run --model DIR | summary KERNELS.csv [--step-ms MS]');
  process.exit(2);
}
