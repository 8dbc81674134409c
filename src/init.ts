/**
 * init(): a randomly initialised checkpoint for a family that publishes no weights (MoE-Mamba), or a
 * BlackMamba of any size, written in the BlackMamba layout (Megatron-style config.json and the
 * reference code's tensor names) as model.safetensors. The initialisation follows the reference
 * code (Zyphra/BlackMamba mamba_layer.py, mamba_model.py): embeddings and linear weights N(0, 0.02),
 * output projections scaled by 1/sqrt(layers), depthwise conv U(±1/sqrt(K)), dt_proj U(±dt_rank^-½),
 * dt biases the inverse softplus of log-uniform steps in [0.001, 0.1], A_log = log(1..d_state),
 * D = 1, norms 1, other biases 0.
 */
import { mkdir, mkdtemp, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { blackmamba, moeMamba } from '../converters/blackmamba.js';
import { HubmoeError } from './errors.js';
import { f32ToBf16 } from './io/dtype.js';
import { writeSafetensors } from './io/safetensors.js';
import type { WriteEntry } from './io/safetensors.js';
import type { Family } from './schema/spec.js';
import { makeRng } from '../runtime/sampling.js';

export interface InitOptions {
  family: Extract<Family, 'moe-mamba' | 'blackmamba'>;
  outDir: string;
  /** Config keys (BlackMamba layout) overriding the defaults. */
  config?: Record<string, unknown>;
  seed?: number;
  dtype?: 'fp32' | 'bf16';
  overwrite?: boolean;
}

/** Defaults: MoE-Mamba's small model (d_model 512, 8 blocks alternating Mamba and 8-expert MoE). */
export const INIT_DEFAULTS = {
  num_layers: 8,
  hidden_size: 512,
  state_size: 16,
  conv_dimension: 4,
  expansion_factor: 2,
  vocab_size: 50304,
  ffn_hidden_size: 1536,
  mamba_moe_layers: ['r', '8', 'r', '8', 'r', '8', 'r', '8'],
  add_bias_linear: false,
  swiglu: false,
  max_sequence_length: 2048,
};

export interface InitResult {
  outDir: string;
  files: string[];
  parameters: number;
}

export async function init(options: InitOptions): Promise<InitResult> {
  const moe = options.family === 'moe-mamba';
  const config: Record<string, unknown> = { ...INIT_DEFAULTS, routing_mode: moe ? 'top1' : 'sinkhorn', ...options.config };
  if (moe && config.routing_mode === 'sinkhorn') {
    throw new HubmoeError('BAD_CONFIG', 'MoE-Mamba routes with softmax top-1 (routing_mode "top1"); "sinkhorn" is BlackMamba\'s sigmoid routing');
  }
  config.model_type = options.family;
  const spec = (moe ? moeMamba : blackmamba).toSpec({ config, where: 'init config', files: [] }, {});
  const rng = makeRng(options.seed ?? 0);
  const normal = (): number => Math.sqrt(-2 * Math.log(Math.max(rng(), 1e-12))) * Math.cos(2 * Math.PI * rng());
  const H = spec.hidden;
  const outScale = 0.02 / Math.sqrt(spec.blocks.length);
  const entries: WriteEntry[] = [];
  const add = (name: string, shape: number[], f: (i: number) => number): void => {
    const values = Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, (_, i) => f(i));
    const bf16 = options.dtype === 'bf16';
    entries.push({ name, dtype: bf16 ? 'BF16' : 'F32', shape, data: new Uint8Array(bf16 ? f32ToBf16(values).buffer : values.buffer) });
  };
  const gauss = (std: number) => () => normal() * std;
  const uniform = (bound: number) => () => (rng() * 2 - 1) * bound;
  const ones = (): number => 1;
  const zeros = (): number => 0;
  const mlp = (p: string, F: number, glu: boolean, bias: boolean): void => {
    add(`${p}.linear_fc1.weight`, [glu ? 2 * F : F, H], gauss(0.02));
    if (bias) add(`${p}.linear_fc1.bias`, [glu ? 2 * F : F], zeros);
    add(`${p}.linear_fc2.weight`, [H, F], gauss(outScale));
    if (bias) add(`${p}.linear_fc2.bias`, [H], zeros);
  };

  add('embedding.word_embeddings.weight', [spec.vocab.padded_size, H], gauss(0.02));
  for (const block of spec.blocks) {
    const L = `decoder.layers.${block.source_layer}`;
    add(`${L}.norm.weight`, [H], ones);
    const op = block.op;
    if (op.kind === 'mamba') {
      const { d_inner: E, d_state: N, d_conv: K, dt_rank: R } = op;
      add(`${L}.mixer.in_proj.weight`, [2 * E, H], gauss(0.02));
      if (op.proj_bias) add(`${L}.mixer.in_proj.bias`, [2 * E], zeros);
      add(`${L}.mixer.conv1d.weight`, [E, 1, K], uniform(1 / Math.sqrt(K)));
      if (op.conv_bias) add(`${L}.mixer.conv1d.bias`, [E], uniform(1 / Math.sqrt(K)));
      add(`${L}.mixer.x_proj.weight`, [R + 2 * N, E], gauss(0.02));
      add(`${L}.mixer.dt_proj.weight`, [E, R], uniform(R ** -0.5));
      add(`${L}.mixer.dt_proj.bias`, [E], () => {
        const dt = Math.max(Math.exp(rng() * (Math.log(0.1) - Math.log(0.001)) + Math.log(0.001)), 1e-4);
        return dt + Math.log(-Math.expm1(-dt));
      });
      add(`${L}.mixer.A_log`, [E, N], (i) => Math.log((i % N) + 1));
      add(`${L}.mixer.D`, [E], ones);
      add(`${L}.mixer.out_proj.weight`, [H, E], gauss(outScale));
      if (op.proj_bias) add(`${L}.mixer.out_proj.bias`, [H], zeros);
    } else if (op.kind === 'mlp') {
      mlp(`${L}.mixer`, op.hidden, op.glu, op.bias);
    } else if (op.kind === 'moe') {
      add(`${L}.mixer.router.weight`, [op.experts, H], gauss(0.02));
      add(`${L}.mixer.router.bias`, [op.experts], zeros);
      for (let e = 0; e < op.experts; e++) mlp(`${L}.mixer.local_experts.${e}`, op.expert.hidden, op.expert.glu, op.expert.bias);
    }
  }
  add('decoder.final_layernorm.weight', [H], ones);
  add('decoder.final_layernorm.bias', [H], zeros);
  if (spec.lm_head_bias) add('output_layer.bias', [spec.vocab.padded_size], zeros);

  const outDir = resolve(options.outDir);
  let existing: string[] = [];
  try {
    existing = await readdir(outDir);
  } catch {
    // does not exist yet
  }
  if (existing.length && !options.overwrite) throw new HubmoeError('BAD_ARGUMENT', `${outDir} exists and is not empty; choose another --out or pass --overwrite`);
  await mkdir(dirname(outDir), { recursive: true });
  const tmp = await mkdtemp(join(dirname(outDir), `.${basename(outDir)}.tmp-`));
  try {
    await writeFile(join(tmp, 'config.json'), JSON.stringify(config, null, 2) + '\n');
    await writeSafetensors(join(tmp, 'model.safetensors'), entries, { format: 'pt', producer: 'hubmoe init' });
    if (options.overwrite) await rm(outDir, { recursive: true, force: true });
    await rename(tmp, outDir);
  } catch (err) {
    await rm(tmp, { recursive: true, force: true });
    throw err;
  }
  return { outDir, files: ['config.json', 'model.safetensors'], parameters: entries.reduce((a, e) => a + e.shape.reduce((x, y) => x * y, 1), 0) };
}
