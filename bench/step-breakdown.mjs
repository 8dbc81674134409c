#!/usr/bin/env node
/**
 * Where the wall time of a greedy decode step goes on the static-cache graph (native backend): the host writes of
 * the step's inputs (token ids, mask column, position), the run (queueing it, ONNX Runtime's Run with the CUDA
 * graph's replay and its synchronisation, the return to JavaScript), reading the step's token back, and the rest
 * (JavaScript between steps). Compare the run's share with the kernels' own time from Nsight Compute
 * (bench/kernel-profile.mjs) to split it into GPU work and launch/host overhead.
 *
 *   npm run build && node bench/step-breakdown.mjs --model DIR [--batch 1] [--steps 64] [--prompt 64] [--rounds 3] [--graph static|cuda-graph] [--loop] [--json FILE]
 *
 * Timing wraps the backend's runBound and the device values' write/download/read methods in place (this script
 * only); the step wall time is the gap between consecutive onToken calls. The run is split further by the addon's
 * own clock (the session's `lastRunTiming`): the hand-overs between threads, the IoBinding, ONNX Runtime's Run, the
 * wait for the GPU and the return. That is the step loop in JavaScript (`decodeLoop: false`).
 *
 * With --loop, the greedy steps run inside the addon (the default for fused models): the step is the generation's
 * time from the prefill's token to the last one over its steps, split by the addon's clock (the session's
 * `lastGreedyTiming`, summed over the generation's calls): the step's input writes, ORT's Run, the wait for the GPU,
 * the token read, the calls' thread hand-overs, and the rest (JavaScript between calls).
 */
import { decodeMsPerStep } from './decode-time.mjs';
import { writeFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { graphChoice, loadModel } from '../dist/runtime/model.js';

const { values } = parseArgs({
  options: {
    model: { type: 'string' },
    device: { type: 'string', default: 'cuda' },
    batch: { type: 'string', default: '1' },
    steps: { type: 'string', default: '64' },
    prompt: { type: 'string', default: '64' },
    rounds: { type: 'string', default: '3' },
    graph: { type: 'string' },
    loop: { type: 'boolean', default: false },
    json: { type: 'string' },
  },
});
if (!values.model) {
  console.error('usage: node bench/step-breakdown.mjs --model DIR [--batch 1] [--steps 64] [--prompt 64] [--rounds 3] [--graph static|cuda-graph] [--loop] [--json FILE]');
  process.exit(2);
}
const model = await loadModel(values.model, { device: values.device, ...graphChoice(values.graph), decodeLoop: values.loop });
const backend = model.backend;
if (!backend || typeof backend.runBound !== 'function' || typeof backend.allocate !== 'function') {
  console.error('step-breakdown needs the native backend (static-cache graph with device values)');
  process.exit(2);
}
const B = Number(values.batch);
const steps = Number(values.steps);
const P = Number(values.prompt);
const V = model.spec.vocab.size;
let seed = 7;
const rand = () => {
  seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
  return 3 + (seed % (V - 3));
};
const median = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
if (values.loop) {
  if (typeof backend.greedySteps !== 'function') {
    console.error('--loop needs a fused model on the native backend (greedy steps in the addon)');
    process.exit(2);
  }
  // Per generation: the addon's split summed over its greedy calls, then per step.
  const PARTS = ['write', 'run', 'sync', 'read', 'calls'];
  const sum = {};
  const greedySteps = backend.greedySteps.bind(backend);
  backend.greedySteps = async (args) => {
    const r = await greedySteps(args);
    const t = backend.lastGreedyTiming;
    for (const k of ['write', 'run', 'sync', 'read']) sum[k] += t[k] / 1000;
    sum.calls += (t.wait + t.handOver + t.handBack + t.settle) / 1000;
    sum.n += 1;
    return r;
  };
  const rows = { step: [], ...Object.fromEntries(PARTS.map((k) => [k, []])), chunks: [] };
  const generation = async (record) => {
    for (const k of [...PARTS, 'n']) sum[k] = 0;
    const prompts = Array.from({ length: B }, () => Array.from({ length: P }, rand));
    const ms = await decodeMsPerStep(model, prompts, steps, {
      onFirst: () => {
        for (const k of [...PARTS, 'n']) sum[k] = 0;
      },
    });
    if (!record) return;
    rows.step.push(ms);
    for (const k of PARTS) rows[k].push(sum[k] / steps);
    rows.chunks.push(sum.n);
  };
  await generation(false); // warm-up: captures the CUDA graphs
  for (let r = 0; r < Number(values.rounds); r++) await generation(true);
  const m = Object.fromEntries(Object.entries(rows).map(([k, v]) => [k, median(v)]));
  const other = m.step - m.write - m.run - m.sync - m.read - m.calls;
  console.log(`| ${values.model}, batch ${B} (${model.graph}, greedy steps in the addon: ${m.chunks} calls for ${steps} steps) | ms per step | share |\n| --- | --- | --- |`);
  const label = [
    ['step (wall, prefill token to last token over the steps)', m.step],
    ["writes of the step's token ids, mask column and position", m.write],
    ['ORT Run (graph launch)', m.run],
    ['waiting for the GPU', m.sync],
    ['reading the tokens', m.read],
    ["the calls' thread hand-overs (to a worker, the session's thread and back), per step", m.calls],
    ['the rest (JavaScript between calls)', other],
  ];
  for (const [k, v] of label) console.log(`| ${k} | ${v.toFixed(3)} | ${((100 * v) / m.step).toFixed(1)} % |`);
  if (values.json) await writeFile(values.json, JSON.stringify({ model: values.model, batch: B, steps, graph: model.graph, loop: true, msPerStep: m.step, calls: m.chunks, ms: { write: m.write, run: m.run, sync: m.sync, read: m.read, calls: m.calls, other } }, null, 2));
  await model.dispose();
  process.exit(0);
}
const spent = { write: 0, run: 0, read: 0 };
// Inside the run, from the addon's own clock (NativeRunTiming, µs), summed over the step's runs.
const PARTS = ['wait', 'handOver', 'bind', 'run', 'sync', 'collect', 'handBack', 'settle'];
const inside = Object.fromEntries(PARTS.map((k) => [k, 0]));
let timing = false;
const wrap = (obj, name, bucket) => {
  const orig = obj[name];
  const timed = function (...args) {
    if (!timing) return orig.apply(this, args);
    const t = performance.now();
    const r = orig.apply(this, args);
    if (r && typeof r.then === 'function') {
      return r.finally(() => {
        spent[bucket] += performance.now() - t;
      });
    }
    spent[bucket] += performance.now() - t;
    return r;
  };
  // The addon's methods are read-only on its class: shadow them on the object.
  Object.defineProperty(obj, name, { value: timed, configurable: true, writable: true });
};
wrap(backend, 'runBound', 'run');
{
  const runBound = backend.runBound;
  Object.defineProperty(backend, 'runBound', {
    configurable: true,
    writable: true,
    value: async function (...args) {
      const r = await runBound.apply(this, args);
      const t = timing ? backend.lastRunTiming : undefined;
      if (t) for (const k of PARTS) inside[k] += t[k] / 1000;
      return r;
    },
  });
}
// Device values (the step's input buffers among them) are made by allocate: wrap each one's methods.
const allocate = backend.allocate;
backend.allocate = function (...args) {
  const v = allocate.apply(this, args);
  wrap(v, 'write', 'write');
  wrap(v, 'download', 'read');
  wrap(v, 'read', 'read');
  return v;
};

const rows = { step: [], write: [], run: [], read: [], ...Object.fromEntries(PARTS.map((k) => [`run.${k}`, []])) };
async function round(record) {
  const prompts = Array.from({ length: B }, () => Array.from({ length: P }, rand));
  let last;
  let n = 0;
  await model.generate(prompts, {
    maxNewTokens: steps + 1,
    ignoreEos: true,
    onToken: ({ row }) => {
      // One call per row and step; row 0's marks the step. The first follows the prefill, each later one closes a
      // decode step.
      if (row !== 0) return;
      const now = performance.now();
      if (record && n > 0) {
        rows.step.push(now - last);
        rows.write.push(spent.write);
        rows.run.push(spent.run);
        rows.read.push(spent.read);
        for (const k of PARTS) rows[`run.${k}`].push(inside[k]);
      }
      spent.write = spent.run = spent.read = 0;
      for (const k of PARTS) inside[k] = 0;
      timing = true;
      n++;
      last = performance.now();
    },
  });
  timing = false;
}
await round(false); // warm-up: captures the CUDA graphs
for (let r = 0; r < Number(values.rounds); r++) await round(true);
const m = Object.fromEntries(Object.entries(rows).map(([k, v]) => [k, median(v)]));
const other = m.step - m.write - m.run - m.read;
const runParts = Object.fromEntries(PARTS.map((k) => [k, m[`run.${k}`]]));
const result = { model: values.model, batch: B, steps: rows.step.length, graph: model.graph, msPerStep: m.step, ms: { write: m.write, run: m.run, read: m.read, other }, run: runParts };
console.log(`| ${values.model}, batch ${B} (${model.graph}) | median ms | share |\n| --- | --- | --- |`);
for (const [k, v] of [['step (wall)', m.step], ['writes of the step inputs', m.write], ['run (queue, ORT Run + replay + sync, return)', m.run], ['reading the token(s) / logits', m.read], ['the rest (JavaScript between steps)', other]]) {
  console.log(`| ${k} | ${v.toFixed(3)} | ${((100 * v) / m.step).toFixed(1)} % |`);
}
const label = {
  wait: 'run: to a worker thread',
  handOver: "run: to the session's thread",
  bind: 'run: IoBinding',
  run: "run: ORT Run (graph launch)",
  sync: 'run: waiting for the GPU',
  collect: 'run: taking the outputs',
  handBack: 'run: back to the worker',
  settle: 'run: back to JavaScript',
};
for (const k of PARTS) console.log(`| ${label[k]} | ${runParts[k].toFixed(3)} | ${((100 * runParts[k]) / m.step).toFixed(1)} % |`);
if (values.json) await writeFile(values.json, JSON.stringify(result, null, 2));
await model.dispose();
