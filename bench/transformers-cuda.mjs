#!/usr/bin/env node
/**
 * GPU check of hubmoe/transformers' CUDA route: transformers.js with hubmoe's native backend registered
 * as 'hubmoe', `device: 'cuda'`, on fixtures converted to fp16. Checks that the sessions run on the
 * native backend's CUDA sessions, that from the second step on every cache transformers.js feeds is a
 * CUDA device value (never copied to the host), that every one is freed, and that the greedy tokens
 * equal the reference implementation's; then prints per-token decode times next to transformers.js
 * on its own CUDA provider (caches through host memory) when that is available.
 *
 *   npm run build && npm run build:native          # on the development machine
 *   node bench/transformers-cuda.mjs [--fixtures jamba-demo,blackmamba-glu-bias,mamba-hf] [--tokens 64] [--json FILE]
 *
 * On the GPU machine it needs dist/, runtime/native/build/hubmoe_native.node, onnxruntime-node with the
 * CUDA provider (shared/devkit), and @huggingface/transformers' dist/transformers.node.mjs +
 * package.json under node_modules (its `sharp` import may be a stub: no image is read).
 * `--device cpu` is a dry run on a machine without a GPU. Exit 0 when every check passes.
 */
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';
import { convert } from '../dist/src/convert.js';
import { SafetensorsFile } from '../dist/src/io/safetensors.js';
import { toIntArray } from '../dist/src/io/dtype.js';
import { installation, registerNativeBackend, unmarkHubmoeBackend, markHubmoeBackend } from '../dist/src/transformers/index.js';
import { loadNative, nativeStatus } from '../dist/runtime/native/index.js';
import { AutoModelForCausalLM, Tensor, env } from '@huggingface/transformers';

const { values } = parseArgs({
  options: {
    fixtures: { type: 'string', default: 'jamba-demo,blackmamba-glu-bias,mamba-hf' },
    tokens: { type: 'string', default: '64' },
    json: { type: 'string' },
    device: { type: 'string', default: 'cuda' },
  },
});
const root = new URL('..', import.meta.url).pathname;
const DEVICE = values.device === 'cpu' ? 'cpu' : 'cuda';
const TOKENS = Number(values.tokens);
env.allowRemoteModels = false;
env.allowLocalModels = true;

const report = { installation, checks: [], timings: {} };
let failed = false;
function check(name, ok, detail) {
  report.checks.push({ name, ok, ...(detail === undefined ? {} : { detail }) });
  if (!ok) failed = true;
  console.error(`${ok ? 'ok  ' : 'FAIL'} ${name}${detail === undefined ? '' : `: ${JSON.stringify(detail)}`}`);
}

async function reference(name) {
  const f = await SafetensorsFile.open(join(root, 'fixtures', name, 'reference.safetensors'));
  const row = async (t) => toIntArray(f.entry(t).dtype, await f.readBytes(t));
  const out = { prompt: await row('greedy_prompt'), tokens: await row('greedy_tokens') };
  await f.close();
  return out;
}

const ids = (row) => new Tensor('int64', BigInt64Array.from(row, BigInt), [1, row.length]);
const ones = (n) => new Tensor('int64', new BigInt64Array(n).fill(1n), [1, n]);

/** Wraps the decoder session's run: records the location of every cache fed and every device output. */
function probe(model) {
  const session = model.sessions.model;
  const run = session.run.bind(session);
  const p = { feeds: [], outputs: [], times: [] };
  session.run = async (feeds) => {
    p.feeds.push(Object.entries(feeds).filter(([k]) => k.startsWith('past')).map(([, v]) => v.location));
    const t0 = performance.now();
    const out = await run(feeds);
    p.times.push(performance.now() - t0);
    for (const t of Object.values(out)) if (t.location === 'gpu-buffer') p.outputs.push(t.gpuBuffer);
    return out;
  };
  return p;
}

async function greedy(model, prompt, n) {
  const out = await model.generate({ input_ids: ids(prompt), attention_mask: ones(prompt.length), max_new_tokens: n, do_sample: false, eos_token_id: [] });
  return out.tolist()[0].slice(prompt.length).map(Number);
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const native = loadNative();
if (!native) {
  console.error(`native backend not available: ${nativeStatus().reason}`);
  process.exit(1);
}
report.native = { ort: native.version(), providers: native.providers() };
console.error(`native: ONNX Runtime ${report.native.ort.ort}; providers ${report.native.providers.join(', ')}`);
await registerNativeBackend(native, { description: 'hubmoe native runtime' });
if (DEVICE === 'cpu') markHubmoeBackend({ deviceCaches: true, devices: ['cpu'] });

const work = await mkdtemp(join(tmpdir(), 'hubmoe-tjs-cuda-'));
for (const name of values.fixtures.split(',')) {
  const dir = join(work, name);
  await convert(join(root, 'fixtures', name, 'checkpoint'), { outDir: dir, dtype: 'both' });
  const ref = await reference(name);
  const ep = [{ name: 'hubmoe', device: DEVICE }];
  // device 'cuda' alone must route to the hubmoe backend and pick the fp16 graph.
  const model = await AutoModelForCausalLM.from_pretrained(dir, DEVICE === 'cuda' ? { device: 'cuda' } : { dtype: 'fp32', session_options: { executionProviders: ep } });
  try {
    const p = probe(model);
    const tokens = await greedy(model, ref.prompt, ref.tokens.length);
    check(`${name}: greedy tokens equal the reference`, JSON.stringify(tokens) === JSON.stringify(ref.tokens), { tokens, reference: ref.tokens });
    const later = [...new Set(p.feeds.slice(1).flat())];
    check(`${name}: every cache fed after the first step is a device value`, later.length === 1 && later[0] === 'gpu-buffer', later);
    const dv = p.outputs[0];
    check(`${name}: the caches are native ${DEVICE} values`, native.isDeviceValue(dv) && dv.location === DEVICE, { location: dv?.location, type: dv?.type, dims: dv?.dims });
    check(`${name}: transformers.js freed every cache`, p.outputs.every((v) => v.disposed), { outputs: p.outputs.length });
    const q = probe(model);
    await greedy(model, ref.prompt, TOKENS);
    report.timings[name] = { hubmoe_backend_ms_per_token: median(q.times.slice(1)), prefill_ms: q.times[0] };
  } finally {
    await model.dispose();
  }
  // transformers.js's own CUDA provider (onnxruntime-node), for comparison: caches through host memory.
  unmarkHubmoeBackend();
  try {
    const own = await AutoModelForCausalLM.from_pretrained(dir, DEVICE === 'cuda' ? { device: 'cuda' } : { dtype: 'fp32' });
    try {
      const q = probe(own);
      const tokens = await greedy(own, ref.prompt, TOKENS);
      report.timings[name].transformers_js_own_ms_per_token = median(q.times.slice(1));
      report.timings[name].own_tokens_equal_reference = JSON.stringify(tokens.slice(0, ref.tokens.length)) === JSON.stringify(ref.tokens);
    } finally {
      await own.dispose();
    }
  } catch (err) {
    report.timings[name].transformers_js_own = `unavailable: ${String(err).slice(0, 200)}`;
  } finally {
    markHubmoeBackend({ deviceCaches: true, devices: [DEVICE] });
  }
  console.error(`${name}: ${JSON.stringify(report.timings[name])}`);
}

if (values.json) await writeFile(values.json, JSON.stringify(report, null, 2) + '\n');
console.log(JSON.stringify(report, null, 2));
process.exit(failed ? 1 : 0);
