import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { blackmamba, moeMamba } from '../../converters/blackmamba.js';
import { detectConverter } from '../../converters/registry.js';
import type { SourceConfig } from '../../converters/types.js';
import { convert } from '../../src/convert.js';
import { HubmoeError } from '../../src/errors.js';
import { init } from '../../src/init.js';
import { LocalDirStore, openCheckpoint } from '../../src/io/checkpoint.js';
import { loadModel } from '../../runtime/model.js';
import { tempDir } from '../helpers.js';

const BASE = {
  num_layers: 4,
  hidden_size: 32,
  state_size: 8,
  conv_dimension: 4,
  vocab_size: 264,
  expansion_factor: 2,
  mamba_moe_layers: ['r', '8', 'r', '8'],
  ffn_hidden_size: 48,
  add_bias_linear: false,
  swiglu: true,
  max_sequence_length: 2048,
};

function src(config: Record<string, unknown>): SourceConfig {
  return { config: { ...BASE, ...config }, where: 'test/config.json', files: ['config.json', 'pytorch_model.bin'] };
}

function refusal(config: Record<string, unknown>): HubmoeError {
  try {
    blackmamba.toSpec(src(config), {});
  } catch (e) {
    return e as HubmoeError;
  }
  throw new Error('expected a refusal');
}

describe('BlackMamba config → spec (as Zyphra\'s reference code reads it)', () => {
  it('alternates Mamba and MoE blocks; sigmoid top-1 routing with a router bias; erf-GELU GLU experts; final LayerNorm; tied head', () => {
    const spec = blackmamba.toSpec(src({}), {});
    expect(spec.blocks.map((b) => b.op.kind)).toEqual(['mamba', 'moe', 'mamba', 'moe']);
    expect(spec.blocks[0]!.op).toMatchObject({ d_inner: 64, d_state: 8, d_conv: 4, dt_rank: 2, inner_norms: false, proj_bias: false, conv_bias: true });
    expect(spec.blocks[1]!.op).toMatchObject({ experts: 8, top_k: 1, router: { act: 'sigmoid', renormalize: false, bias: true }, expert: { hidden: 48, act: 'gelu_erf', glu: true, bias: false } });
    expect(spec.blocks[1]!.norm).toEqual({ kind: 'rms', eps: 1e-5, bias: false });
    expect(spec.final_norm).toEqual({ kind: 'layer', eps: 1e-5, bias: true });
    expect(spec.tie_embeddings).toBe(true);
    expect(spec.vocab.padded_size).toBe(264);
    expect(spec.vocab.eos).toEqual([0]);
  });

  it('reads block kinds and expert counts character by character, as the reference does', () => {
    // "32" → 2 experts (last character); "16" starts with "1" → a dense MLP block; "1" → dense MLP.
    const spec = blackmamba.toSpec(src({ mamba_moe_layers: ['r', '32', '16', '1'] }), {});
    expect(spec.blocks[1]!.op).toMatchObject({ kind: 'moe', experts: 2 });
    expect(spec.blocks[2]!.op).toMatchObject({ kind: 'mlp', hidden: 48, glu: true });
    expect(spec.blocks[3]!.op).toMatchObject({ kind: 'mlp', hidden: 48, glu: true });
  });

  it('add_bias_linear puts biases on the projections, experts and output layer', () => {
    const spec = blackmamba.toSpec(src({ add_bias_linear: true, swiglu: false }), {});
    expect(spec.lm_head_bias).toBe(true);
    expect(spec.blocks[0]!.op).toMatchObject({ proj_bias: true });
    expect(spec.blocks[1]!.op).toMatchObject({ expert: { bias: true, glu: false } });
  });

  it('offers SiLU experts (the paper\'s SwiGLU) as an option, or from the config', () => {
    expect(blackmamba.toSpec(src({}), { expertAct: 'silu' }).blocks[1]!.op).toMatchObject({ expert: { act: 'silu' } });
    expect(blackmamba.toSpec(src({ activation: 'silu' }), {}).blocks[1]!.op).toMatchObject({ expert: { act: 'silu' } });
  });

  it('routing_mode top1 is MoE-Mamba: softmax top-1', () => {
    expect(detectConverter(src({ routing_mode: 'top1' })).family).toBe('moe-mamba');
    expect(detectConverter(src({})).family).toBe('blackmamba');
    const spec = moeMamba.toSpec(src({ routing_mode: 'top1' }), {});
    expect(spec.blocks[1]!.op).toMatchObject({ router: { act: 'softmax', renormalize: false } });
  });

  it.each([
    [{ mamba_moe_layers: ['r8', 'r', 'r', 'r'] }, /entry 0 is "r8": Mamba blocks with a parallel MLP\/MoE are not supported/],
    [{ mamba_moe_layers: ['r', 'x', 'r', 'r'] }, /entry 1 is "x"/],
    [{ mamba_moe_layers: ['r', '8'] }, /has 2 entries for num_layers 4/],
    [{ rms_norm: false }, /rms_norm/],
    [{ state_size: 0 }, /state_size must be an integer ≥ 1/],
    [{ activation: 'swizzle' }, /activation "swizzle" is not an activation/],
  ])('refuses %j naming the field', (config, pattern) => {
    const err = refusal(config);
    expect(err.code).toBe('BAD_CONFIG');
    expect(err.message).toMatch(pattern);
  });
});

describe('hubmoe init', () => {
  it('writes a MoE-Mamba checkpoint that converts and generates with caches (no attention layers)', async () => {
    const dir = await tempDir();
    const res = await init({ family: 'moe-mamba', outDir: join(dir, 'ckpt'), config: { ...BASE, swiglu: false }, seed: 3 });
    expect(res.files).toEqual(['config.json', 'model.safetensors']);
    const src = await openCheckpoint(new LocalDirStore(res.outDir));
    expect(src.names()).toContain('decoder.layers.1.mixer.local_experts.7.linear_fc1.weight');
    expect(Array.from(await src.read('decoder.layers.0.mixer.A_log', { start: 0, count: 8 })).map((v) => Math.round(Math.exp(v)))).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    await src.close();
    const conv = await convert(res.outDir, { outDir: join(dir, 'onnx') });
    expect(conv.spec.family).toBe('moe-mamba');
    expect(conv.spec.blocks.some((b) => b.op.kind === 'attention')).toBe(false);
    const model = await loadModel(join(dir, 'onnx'), { threads: 1 });
    const gen = await model.generate([[5, 6, 7]], { maxNewTokens: 6, ignoreEos: true, outputLogits: true });
    const full = await model.forward([[5, 6, 7, ...gen.tokens[0]!.slice(0, 5)]]);
    const V = full.dims[2];
    for (let s = 0; s < 6; s++) {
      const want = full.data.subarray((2 + s) * V, (3 + s) * V);
      const got = gen.logits![s]!;
      let d = 0;
      let m = 0;
      for (let i = 0; i < V; i++) {
        d = Math.max(d, Math.abs(got[i]! - want[i]!));
        m = Math.max(m, Math.abs(want[i]!));
      }
      expect(d / m).toBeLessThan(1e-4);
    }
    await model.dispose();
  });

  it('refuses sinkhorn routing for MoE-Mamba', async () => {
    const dir = await tempDir();
    const err = await init({ family: 'moe-mamba', outDir: join(dir, 'x'), config: { routing_mode: 'sinkhorn' } }).catch((e: unknown) => e);
    expect((err as HubmoeError).code).toBe('BAD_CONFIG');
  });
});
