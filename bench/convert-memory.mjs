#!/usr/bin/env node
/**
 * Peak memory of `convert` against the size of the model: writes a synthetic bf16 Jamba checkpoint
 * (random weights, sharded like the Hub's), converts it to fp32 ONNX in a child process, and prints
 * the child's peak resident memory next to the checkpoint size and the largest tensor.
 *
 *   npm run build && node bench/convert-memory.mjs [--hidden 1024] [--layers 8] [--experts 16] [--intermediate 4096] [--vocab 32000] [--dir /tmp/hubmoe-mem]
 *
 * Results and the command line are recorded in docs/memory.md.
 */
import { spawnSync } from 'node:child_process';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { writeShardedSafetensors } from '../dist/src/io/safetensors.js';

const { values } = parseArgs({
  options: {
    hidden: { type: 'string', default: '1024' },
    layers: { type: 'string', default: '8' },
    experts: { type: 'string', default: '16' },
    intermediate: { type: 'string', default: '4096' },
    vocab: { type: 'string', default: '32000' },
    dir: { type: 'string', default: '/tmp/hubmoe-mem' },
    child: { type: 'string' },
  },
});

if (values.child) {
  // Child: convert and report peak RSS.
  const { convert } = await import('../dist/src/convert.js');
  const before = process.resourceUsage().maxRSS;
  const t0 = Date.now();
  await convert(values.child, { outDir: join(values.dir, 'out'), overwrite: true });
  const r = process.resourceUsage();
  console.log(JSON.stringify({ maxRssKiB: r.maxRSS, startRssKiB: before, seconds: (Date.now() - t0) / 1000 }));
  process.exit(0);
}

const H = Number(values.hidden), L = Number(values.layers), X = Number(values.experts), I = Number(values.intermediate), V = Number(values.vocab);
const E = 2 * H, N = 16, K = 4, R = Math.ceil(H / 16);
let seed = 12345;
function bf16Random(n, scale) {
  const out = new Uint16Array(n);
  const f = new Float32Array(1);
  const u = new Uint32Array(f.buffer);
  for (let i = 0; i < n; i++) {
    seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
    f[0] = ((seed / 4294967296) * 2 - 1) * scale;
    out[i] = u[0] >>> 16;
  }
  return new Uint8Array(out.buffer);
}
const entries = [];
const t = (name, shape, scale = 0.02) => entries.push({ name, dtype: 'BF16', shape, data: async () => bf16Random(shape.reduce((a, b) => a * b, 1), scale) });
t('model.embed_tokens.weight', [V, H]);
for (let i = 0; i < L; i++) {
  const p = `model.layers.${i}`;
  t(`${p}.input_layernorm.weight`, [H], 1);
  t(`${p}.pre_ff_layernorm.weight`, [H], 1);
  if (i % 8 === 4) {
    for (const x of ['q', 'o']) t(`${p}.self_attn.${x}_proj.weight`, [H, H]);
    for (const x of ['k', 'v']) t(`${p}.self_attn.${x}_proj.weight`, [H / 4, H]);
  } else {
    t(`${p}.mamba.in_proj.weight`, [2 * E, H]);
    t(`${p}.mamba.conv1d.weight`, [E, 1, K]);
    t(`${p}.mamba.conv1d.bias`, [E]);
    t(`${p}.mamba.x_proj.weight`, [R + 2 * N, E]);
    t(`${p}.mamba.dt_proj.weight`, [E, R]);
    t(`${p}.mamba.dt_proj.bias`, [E]);
    t(`${p}.mamba.A_log`, [E, N], 1);
    t(`${p}.mamba.D`, [E], 1);
    t(`${p}.mamba.out_proj.weight`, [H, E]);
    for (const x of ['dt', 'b', 'c']) t(`${p}.mamba.${x}_layernorm.weight`, [x === 'dt' ? R : N], 1);
  }
  if (i % 2 === 1) {
    t(`${p}.feed_forward.router.weight`, [X, H]);
    for (let e = 0; e < X; e++) for (const x of ['gate', 'up', 'down']) t(`${p}.feed_forward.experts.${e}.${x}_proj.weight`, x === 'down' ? [H, I] : [I, H]);
  } else {
    for (const x of ['gate', 'up', 'down']) t(`${p}.feed_forward.${x}_proj.weight`, x === 'down' ? [H, I] : [I, H]);
  }
}
t('model.final_layernorm.weight', [H], 1);
t('lm_head.weight', [V, H]);

const ckpt = join(values.dir, 'checkpoint');
await rm(values.dir, { recursive: true, force: true });
await mkdir(ckpt, { recursive: true });
await writeFile(join(ckpt, 'config.json'), JSON.stringify({
  model_type: 'jamba', hidden_size: H, num_hidden_layers: L, num_attention_heads: 16, num_key_value_heads: 4, intermediate_size: I,
  num_experts: X, num_experts_per_tok: 2, vocab_size: V, mamba_d_state: N, mamba_d_conv: K, mamba_expand: 2, dtype: 'bfloat16',
}));
await writeShardedSafetensors(ckpt, entries, 500 * 2 ** 20);
const totalBytes = entries.reduce((a, e) => a + e.shape.reduce((x, y) => x * y, 1) * 2, 0);
const largest = Math.max(...entries.map((e) => e.shape.reduce((x, y) => x * y, 1)));
const child = spawnSync(process.execPath, [new URL(import.meta.url).pathname, '--child', ckpt, '--dir', values.dir], { encoding: 'utf-8' });
if (child.status !== 0) {
  console.error(child.stderr);
  process.exit(1);
}
const res = JSON.parse(child.stdout.trim().split('\n').pop());
const baseline = spawnSync(process.execPath, ['-e', "await import('onnxruntime-node'); await import('./dist/src/convert.js'); console.log(process.resourceUsage().maxRSS)"], { encoding: 'utf-8', cwd: new URL('..', import.meta.url).pathname, env: { ...process.env } });
const mib = (b) => (b / 2 ** 20).toFixed(0);
console.log(`| checkpoint (bf16) | largest tensor (fp32) | fp32 ONNX data | peak RSS | RSS of node + hubmoe loaded | time |`);
console.log(`| --- | --- | --- | --- | --- | --- |`);
console.log(`| ${mib(totalBytes)} MiB | ${mib(largest * 4)} MiB | ${mib(totalBytes * 2)} MiB | ${mib(res.maxRssKiB * 1024)} MiB | ${mib(Number(baseline.stdout.trim()) * 1024)} MiB | ${res.seconds.toFixed(1)} s |`);
await rm(values.dir, { recursive: true, force: true });
