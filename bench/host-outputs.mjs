#!/usr/bin/env node
/**
 * How long the native backend takes to hand a large host output to JavaScript: a one-node model (Expand) whose
 * output is [1, T, V] fp32, run `repeat` times on the CPU; the median time per run. The same runs are made twice,
 * side by side in child processes: with outputs adopted (the JS array is over ONNX Runtime's own output memory,
 * the default) and copied (HUBMOE_NATIVE_COPY_OUTPUTS=1, the behaviour before). The default size is a 2048-token
 * prefill's logits over a 65536-token vocabulary (512 MB), which forward() returns.
 *
 *   npm run build && npm run build:native && node bench/host-outputs.mjs [--tokens 2048] [--vocab 65536] [--repeat 12] [--json FILE]
 */
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    tokens: { type: 'string', default: '2048' },
    vocab: { type: 'string', default: '65536' },
    repeat: { type: 'string', default: '12' },
    json: { type: 'string' },
    child: { type: 'string' },
  },
});

if (values.child) {
  // One side: time `repeat` runs of the model at values.child.
  const { loadNative } = await import('../dist/runtime/native/index.js');
  const n = loadNative();
  if (!n) throw new Error('the native addon is not built (npm run build:native)');
  const s = await n.createSession(values.child, { device: 'cpu', threads: 2 });
  const times = [];
  for (let i = 0; i < Number(values.repeat); i++) {
    const t0 = performance.now();
    const out = await s.run({ x: { type: 'float32', dims: [1], data: Float32Array.of(i) } });
    if (out.y.data[out.y.data.length - 1] !== i) throw new Error('wrong output');
    times.push(performance.now() - t0);
    await new Promise((r) => setImmediate(r)); // let finalizers of dropped outputs run, as between awaits in real use
  }
  await s.release();
  times.sort((a, b) => a - b);
  console.log(JSON.stringify({ medianMs: times[Math.floor(times.length / 2)], minMs: times[0], maxMs: times[times.length - 1] }));
  process.exit(0);
}

const { GraphBuilder } = await import('../dist/src/onnx/graph.js');
const { writeOnnx } = await import('../dist/src/onnx/export.js');
const { TensorDataType } = await import('../dist/src/onnx/proto.js');
const T = Number(values.tokens);
const V = Number(values.vocab);
const dir = await mkdtemp(join(tmpdir(), 'hubmoe-host-outputs-'));
try {
  const g = new GraphBuilder('fp32');
  g.output('y', g.op('Expand', [g.input('x', TensorDataType.FLOAT, [1]), g.ints([1, T, V])]), TensorDataType.FLOAT, [1, T, V]);
  await writeOnnx(g, dir, 'expand', { producerVersion: '0' });
  const model = join(dir, 'expand.onnx');
  const me = fileURLToPath(import.meta.url);
  const side = (copy) =>
    JSON.parse(
      execFileSync(process.execPath, [me, '--child', model, '--repeat', values.repeat], {
        env: { ...process.env, HUBMOE_NATIVE_COPY_OUTPUTS: copy ? '1' : '0' },
        encoding: 'utf8',
      }),
    );
  const adopted = side(false);
  const copied = side(true);
  const mb = (T * V * 4) / 2 ** 20;
  const result = { outputMiB: mb, repeat: Number(values.repeat), adopted, copied, speedup: copied.medianMs / adopted.medianMs };
  console.log(`output [1, ${T}, ${V}] fp32 (${mb.toFixed(0)} MiB), median of ${values.repeat} runs:`);
  console.log(`| outputs | median ms/run | min | max |`);
  console.log(`| --- | --- | --- | --- |`);
  for (const [name, r] of [['adopted (default)', adopted], ['copied (HUBMOE_NATIVE_COPY_OUTPUTS=1)', copied]]) {
    console.log(`| ${name} | ${r.medianMs.toFixed(1)} | ${r.minMs.toFixed(1)} | ${r.maxMs.toFixed(1)} |`);
  }
  console.log(`speed-up ${result.speedup.toFixed(2)}x`);
  if (values.json) await writeFile(values.json, JSON.stringify(result, null, 2));
} finally {
  await rm(dir, { recursive: true, force: true });
}
