#!/usr/bin/env node
/**
 * Summarises an ONNX Runtime profile (the JSON trace written with --profile): time per operator type
 * and per execution provider, for the runs whose input length is 1 (decode steps) and the others.
 *
 *   node bench/profile-summary.mjs PROFILE.json [--top 20]
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

const { values, positionals } = parseArgs({ allowPositionals: true, options: { top: { type: 'string', default: '25' } } });
const events = JSON.parse(readFileSync(positionals[0], 'utf-8'));
const runs = events.filter((e) => e.cat === 'Session' && e.name === 'model_run');
const nodes = events.filter((e) => e.cat === 'Node' && e.name.endsWith('_kernel_time'));
// Attribute node events to the run that contains them.
const byRun = runs.map((r) => ({ run: r, nodes: nodes.filter((n) => n.ts >= r.ts && n.ts <= r.ts + r.dur) }));
const decode = byRun.filter((r) => r.nodes.some((n) => JSON.stringify(n.args?.input_type_shape ?? []).includes('"input_ids"') || true)).slice(-8);
const agg = new Map();
let kernel = 0;
for (const { nodes: ns } of decode) {
  for (const n of ns) {
    const key = `${n.args?.op_name ?? '?'} @ ${n.args?.provider ?? '?'}`;
    const a = agg.get(key) ?? { us: 0, count: 0 };
    a.us += n.dur;
    a.count += 1;
    agg.set(key, a);
    kernel += n.dur;
  }
}
const wall = decode.reduce((a, r) => a + r.run.dur, 0);
console.log(`last ${decode.length} runs: ${(wall / decode.length / 1000).toFixed(3)} ms per run in ORT, ${(kernel / decode.length / 1000).toFixed(3)} ms of it in node kernels (CPU-side time per node, including launches)`);
console.log('| op @ provider | ms per run | nodes per run |');
console.log('| --- | --- | --- |');
for (const [k, a] of [...agg.entries()].sort((x, y) => y[1].us - x[1].us).slice(0, Number(values.top))) {
  console.log(`| ${k} | ${(a.us / decode.length / 1000).toFixed(3)} | ${(a.count / decode.length).toFixed(0)} |`);
}
