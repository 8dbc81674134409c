#!/usr/bin/env node
/**
 * GPU check of hubmoe's native backend (runtime/native): converts a fixture to fp16, runs a prefill and
 * a cached greedy decode on a native CUDA session with the caches kept on the GPU as device values
 * (IO binding), and compares every step's logits with onnxruntime-node's CUDA session fed the same
 * tokens (caches through host memory). Also checks the device values (location, download, dispose),
 * that one libonnxruntime is mapped, and prints per-step decode times of both paths.
 *
 *   npm run build && npm run build:native          # on the development machine
 *   node bench/native-cuda-check.mjs [--fixture jamba-demo] [--model DIR] [--steps 16] [--batch 2]
 *        [--cuda-option key=value …] [--ops /abs/libhubmoe_ops.so] [--json FILE]
 *
 * On the GPU machine it needs dist/, runtime/native/build/hubmoe_native.node, and onnxruntime-node
 * with the CUDA provider libraries (the device kit: shared/devkit/README.md). Exit 0 when every check
 * passes, 1 otherwise.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';
import { convert } from '../dist/src/convert.js';
import { createBackend, Tensor } from '../dist/runtime/backend.js';
import { loadNative, nativeStatus } from '../dist/runtime/native/index.js';

const { values } = parseArgs({
  options: {
    fixture: { type: 'string', default: 'jamba-demo' },
    model: { type: 'string' },
    steps: { type: 'string', default: '16' },
    batch: { type: 'string', default: '2' },
    'cuda-option': { type: 'string', multiple: true, default: [] },
    ops: { type: 'string' },
    json: { type: 'string' },
    // cpu: a dry run of this script on a machine without a GPU (fp32 model, CPU sessions).
    device: { type: 'string', default: 'cuda' },
  },
});
const root = new URL('..', import.meta.url).pathname;
const STEPS = Number(values.steps);
const B = Number(values.batch);
// Both sessions run the same fp16 graph on the same execution provider: expect (near-)identical logits.
const BOUND = 1e-3;
const DEVICE = values.device === 'cpu' ? 'cpu' : 'cuda';

const report = { checks: [], timings: {} };
let failed = false;
function check(name, ok, detail) {
  report.checks.push({ name, ok, ...(detail === undefined ? {} : { detail }) });
  if (!ok) failed = true;
  console.error(`${ok ? 'ok  ' : 'FAIL'} ${name}${detail === undefined ? '' : `: ${typeof detail === 'string' ? detail : JSON.stringify(detail)}`}`);
}

function f16ToF32(bits) {
  const out = new Float32Array(bits.length);
  for (let i = 0; i < bits.length; i++) {
    const h = bits[i];
    const s = h & 0x8000 ? -1 : 1;
    const e = (h >> 10) & 0x1f;
    const m = h & 0x3ff;
    out[i] = e === 0 ? s * m * 2 ** -24 : e === 31 ? (m ? NaN : s * Infinity) : s * (1 + m / 1024) * 2 ** (e - 15);
  }
  return out;
}
const floats = (t) => (t.type === 'float16' ? f16ToF32(t.data) : Float32Array.from(t.data));
function rel(got, want) {
  let d = 0;
  let s = 0;
  for (let i = 0; i < want.length; i++) {
    d = Math.max(d, Math.abs(got[i] - want[i]));
    s = Math.max(s, Math.abs(want[i]));
  }
  return s ? d / s : d;
}

const status = nativeStatus();
const native = loadNative();
if (!native) {
  console.error(`native backend not available: ${status.reason}`);
  process.exit(1);
}
report.native = { ort: native.version(), providers: native.providers() };
console.error(`native: ONNX Runtime ${report.native.ort.ort} (API ${report.native.ort.api}) from ${report.native.ort.library}`);
console.error(`providers: ${report.native.providers.join(', ')}`);

const work = await mkdtemp(join(tmpdir(), 'hubmoe-native-cuda-'));
let modelDir = values.model;
if (!modelDir) {
  modelDir = join(work, values.fixture);
  await convert(join(root, 'fixtures', values.fixture, 'checkpoint'), { outDir: modelDir, dtype: DEVICE === 'cuda' ? 'fp16' : 'fp32' });
}
const modelPath = join(modelDir, 'onnx', DEVICE === 'cuda' ? 'model_fp16.onnx' : 'model.onnx');

const cudaOptions = { arena_extend_strategy: 'kSameAsRequested', cudnn_conv_algo_search: 'DEFAULT', do_copy_in_default_stream: '1', use_tf32: '0' };
for (const kv of values['cuda-option']) {
  const at = kv.indexOf('=');
  cudaOptions[kv.slice(0, at)] = kv.slice(at + 1);
}

try {
  const session = await native.createSession(modelPath, {
    device: DEVICE,
    ...(DEVICE === 'cuda' ? { cudaOptions } : {}),
    ...(values.ops ? { customOpsLibrary: values.ops } : {}),
  });
  check(`native ${DEVICE} session created`, session.device === DEVICE, DEVICE === 'cuda' ? { cudaOptions } : undefined);
  const reference = await createBackend(modelPath, { device: DEVICE });

  const maps = readFileSync('/proc/self/maps', 'utf8')
    .split('\n')
    .map((l) => l.trim().split(/\s+/).slice(5).join(' '))
    .filter((p) => /libonnxruntime\.so/.test(p));
  check('one libonnxruntime mapped', new Set(maps).size === 1, [...new Set(maps)]);

  const caches = session.inputNames.filter((n) => n !== 'input_ids' && n !== 'attention_mask');
  const presentOf = (p) => (p.startsWith('past_key_values.') ? p.replace('past_key_values.', 'present.') : p.replace(/^past_/, 'present_'));
  const presents = caches.map(presentOf);
  const empty = () => {
    const feeds = {};
    for (const m of session.inputMetadata) {
      if (!caches.includes(m.name)) continue;
      const dims = m.shape.map((d) => (typeof d === 'number' ? d : d === 'batch_size' ? B : 0));
      const n = dims.reduce((a, b) => a * b, 1);
      feeds[m.name] = m.type === 'float16' ? { type: 'float16', dims, data: new Uint16Array(n) } : { type: 'float32', dims, data: new Float32Array(n) };
    }
    return feeds;
  };
  const toOrt = (feeds) => Object.fromEntries(Object.entries(feeds).map(([k, t]) => [k, new Tensor(t.type, t.data, [...t.dims])]));
  const V = session.outputMetadata.find((m) => m.name === 'logits').shape.at(-1);

  // Prompts of one length (no padding), a different one per row.
  const T = 6;
  const prompt = Array.from({ length: B }, (_, r) => Array.from({ length: T }, (_, i) => (1 + r * 7 + i * 13) % 200 + 1));
  const ids = (rows, len) => ({
    input_ids: { type: 'int64', dims: [B, rows[0].length], data: BigInt64Array.from(rows.flat(), BigInt) },
    attention_mask: { type: 'int64', dims: [B, len], data: new BigInt64Array(B * len).fill(1n) },
  });
  const lastRows = (logits, seq) => {
    const f = floats(logits);
    const out = new Float32Array(B * V);
    for (let r = 0; r < B; r++) out.set(f.subarray((r * seq + seq - 1) * V, (r * seq + seq) * V), r * V);
    return out;
  };
  const argmax = (rows) => Array.from({ length: B }, (_, r) => {
    let best = 0;
    for (let v = 1; v < V; v++) if (rows[r * V + v] > rows[r * V + best]) best = v;
    return best;
  });

  // Prefill.
  let t0 = performance.now();
  let nat = await session.run({ ...ids(prompt, T), ...empty() }, { deviceOutputs: presents });
  report.timings.native_prefill_ms = performance.now() - t0;
  t0 = performance.now();
  let ref = await reference.run(toOrt({ ...ids(prompt, T), ...empty() }));
  report.timings.ortnode_prefill_ms = performance.now() - t0;
  const dv = nat[presents[0]];
  check(`caches come back as ${DEVICE} device values`, native.isDeviceValue(dv) && dv.location === DEVICE, { type: dv?.type, dims: dv?.dims, location: dv?.location });
  check('logits come back as a host tensor', !native.isDeviceValue(nat.logits) && nat.logits.type === ref.logits.type);
  let worst = rel(lastRows(nat.logits, T), lastRows(ref.logits, T));
  check('prefill logits equal onnxruntime-node', worst <= BOUND, { rel: worst });

  // Cached greedy decode: the same tokens (chosen from onnxruntime-node's logits) into both.
  let len = T;
  const natMs = [];
  const refMs = [];
  const stepRel = [];
  for (let s = 0; s < STEPS; s++) {
    const next = argmax(lastRows(ref.logits, s === 0 ? T : 1));
    len += 1;
    const step = ids(next.map((t) => [t]), len);
    const natFeeds = { ...step };
    caches.forEach((c, i) => (natFeeds[c] = nat[presents[i]]));
    const old = caches.map((_, i) => nat[presents[i]]);
    t0 = performance.now();
    nat = await session.run(natFeeds, { deviceOutputs: presents });
    natMs.push(performance.now() - t0);
    old.forEach((v) => v.dispose());
    const refFeeds = toOrt(step);
    caches.forEach((c, i) => (refFeeds[c] = ref[presents[i]]));
    t0 = performance.now();
    ref = await reference.run(refFeeds);
    refMs.push(performance.now() - t0);
    stepRel.push(rel(lastRows(nat.logits, 1), lastRows(ref.logits, 1)));
  }
  worst = Math.max(...stepRel);
  check(`cached decode (${STEPS} steps, batch ${B}) logits equal onnxruntime-node`, worst <= BOUND, { maxRel: worst });
  const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  report.timings.native_step_ms_median = median(natMs);
  report.timings.ortnode_step_ms_median = median(refMs);

  // Final caches: download from the GPU and compare with onnxruntime-node's host copies.
  let cacheRel = 0;
  for (const p of presents) {
    const d = nat[p].download();
    if (JSON.stringify(d.dims) !== JSON.stringify(ref[p].dims)) {
      check(`${p} dims`, false, { native: d.dims, ortnode: ref[p].dims });
      continue;
    }
    cacheRel = Math.max(cacheRel, rel(floats(d), floats(ref[p])));
  }
  check('downloaded caches equal onnxruntime-node', cacheRel <= BOUND, { maxRel: cacheRel });

  // Lifecycle on the GPU.
  const v = nat[presents[0]];
  v.dispose();
  v.dispose();
  const feeds = { ...ids(prompt.map((r) => [r[0]]), len + 1) };
  caches.forEach((c, i) => (feeds[c] = nat[presents[i]]));
  const err = await session.run(feeds).then(() => undefined, (e) => e);
  check('feeding a disposed device value fails clearly', err?.code === 'RUNTIME' && /disposed/.test(err.message), err?.message);
  for (const p of presents) nat[p].dispose();
  await session.release();
  await reference.release();

  if (DEVICE === 'cuda') {
    const bad = await native.createSession(modelPath, { device: 'cuda', cudaOptions: { no_such_option: '1' } }).then((s) => s.release(), (e) => e);
    check('an unknown CUDA option is refused as BAD_ARGUMENT', bad?.code === 'BAD_ARGUMENT', bad?.message ?? 'accepted');
    const limited = await native.createSession(modelPath, { device: 'cuda', cudaOptions: { gpu_mem_limit: String(2 ** 31), arena_extend_strategy: 'kNextPowerOfTwo' } }).then(
      async (s) => (await s.release(), 'ok'),
      (e) => e?.message,
    );
    check('gpu_mem_limit / arena_extend_strategy accepted', limited === 'ok', limited);
  }
} catch (err) {
  check('run', false, String(err?.stack ?? err));
}

await rm(work, { recursive: true, force: true });
console.log(JSON.stringify(report, null, 2));
if (values.json) await writeFile(values.json, JSON.stringify(report, null, 2));
console.error(failed ? 'native CUDA check: FAILED' : 'native CUDA check: all passed');
process.exit(failed ? 1 : 0);
