import { copyFile, readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { jamba } from '../../converters/jamba.js';
import { detectConverter } from '../../converters/registry.js';
import type { SourceConfig } from '../../converters/types.js';
import { convert } from '../../src/convert.js';
import { HubmoeError } from '../../src/errors.js';
import { LocalDirStore, openCheckpoint } from '../../src/io/checkpoint.js';
import { SafetensorsFile, writeSafetensors } from '../../src/io/safetensors.js';
import { activeParameterCount, parameterCount } from '../../src/schema/tensors.js';
import { validateSpec } from '../../src/schema/validate.js';
import { loadModel } from '../../runtime/model.js';
import { PARITY, Reference, fixture, relError, tempDir } from '../helpers.js';

function src(config: Record<string, unknown>): SourceConfig {
  return { config: { model_type: 'jamba', ...config }, where: 'test/config.json', files: ['config.json'] };
}

function kinds(config: Record<string, unknown>): string[] {
  return jamba.toSpec(src(config), {}).blocks.map((b) => b.op.kind);
}

function specError(config: Record<string, unknown>): HubmoeError {
  try {
    jamba.toSpec(src(config), {});
  } catch (e) {
    return e as HubmoeError;
  }
  throw new Error('expected an error');
}

describe('jamba config → spec', () => {
  it('Jamba-v0.1 (all defaults): attention at layers 4, 12, 20, 28, MoE at odd layers, 51.6B parameters', () => {
    const spec = jamba.toSpec(src({}), {});
    validateSpec(spec);
    expect(spec.blocks.length).toBe(64);
    const attention = spec.blocks.filter((b) => b.op.kind === 'attention').map((b) => b.source_layer);
    expect(attention).toEqual([4, 12, 20, 28]);
    const moe = spec.blocks.filter((b) => b.op.kind === 'moe').map((b) => b.source_layer);
    expect(moe).toEqual(Array.from({ length: 16 }, (_, i) => 2 * i + 1));
    const m = spec.blocks[0]!.op;
    expect(m).toMatchObject({ kind: 'mamba', d_inner: 8192, d_state: 16, d_conv: 4, dt_rank: 256, inner_norms: true, conv_bias: true, proj_bias: false });
    expect(spec.blocks[8]!.op).toMatchObject({ kind: 'attention', heads: 32, kv_heads: 8, head_dim: 128 });
    expect(spec.blocks[3]!.op).toMatchObject({ kind: 'moe', experts: 16, top_k: 2, router: { act: 'softmax', renormalize: false, bias: false } });
    // AI21: 52B total, 12B active.
    expect(parameterCount(spec) / 1e9).toBeCloseTo(51.57, 1);
    expect(activeParameterCount(spec) / 1e9).toBeCloseTo(12.1, 0);
  });

  it('computes the attention and expert schedules independently', () => {
    expect(kinds({ num_hidden_layers: 6, attn_layer_period: 3, attn_layer_offset: 1, expert_layer_period: 2, expert_layer_offset: 0 })).toEqual([
      'mamba', 'moe', 'attention', 'mlp', 'mamba', 'moe', 'mamba', 'mlp', 'attention', 'moe', 'mamba', 'mlp',
    ]);
  });

  it('Jamba-Reasoning-3B-like: MQA, one expert (dense MLPs), tied embeddings, eos list', () => {
    const spec = jamba.toSpec(
      src({ hidden_size: 2560, num_hidden_layers: 28, num_attention_heads: 20, num_key_value_heads: 1, intermediate_size: 8192, attn_layer_period: 14, attn_layer_offset: 7, num_experts: 1, tie_word_embeddings: true, eos_token_id: [2, 519], mamba_dt_rank: 160 }),
      {},
    );
    expect(spec.blocks.filter((b) => b.op.kind === 'attention').map((b) => b.source_layer)).toEqual([7, 21]);
    expect(spec.blocks.some((b) => b.op.kind === 'moe')).toBe(false);
    expect(spec.blocks[14]!.op).toMatchObject({ kind: 'attention', kv_heads: 1, head_dim: 128 });
    expect(spec.tie_embeddings).toBe(true);
    expect(spec.vocab.eos).toEqual([2, 519]);
  });

  it('reads eos as an int, num_key_value_heads null as MHA, an explicit head_dim and layers_block_type', () => {
    const spec = jamba.toSpec(src({ num_hidden_layers: 2, num_key_value_heads: null, head_dim: 64, eos_token_id: 7, layers_block_type: ['attention', 'mamba'] }), {});
    expect(spec.vocab.eos).toEqual([7]);
    expect(spec.blocks[0]!.op).toMatchObject({ kind: 'attention', heads: 32, kv_heads: 32, head_dim: 64 });
    expect(spec.blocks[2]!.op.kind).toBe('mamba');
  });

  it('records the storage dtype from `dtype` or the older `torch_dtype`', () => {
    expect(jamba.toSpec(src({ dtype: 'bfloat16' }), {}).source.dtype).toBe('bfloat16');
    expect(jamba.toSpec(src({ torch_dtype: 'float16' }), {}).source.dtype).toBe('float16');
  });

  it.each([
    [{ attn_layer_offset: 8 }, /attn_layer_offset \(8\) must be less than attn_layer_period \(8\)/],
    [{ expert_layer_offset: 3, expert_layer_period: 2 }, /expert_layer_offset/],
    [{ num_key_value_heads: 5 }, /num_key_value_heads \(5\) must divide num_attention_heads/],
    [{ hidden_size: 100 }, /num_attention_heads \(32\) must divide hidden_size \(100\)/],
    [{ hidden_act: 'gelu' }, /hidden_act/],
    [{ num_experts_per_tok: 20 }, /num_experts_per_tok \(20\) exceeds num_experts/],
    [{ quantization_config: { quant_method: 'fp8' } }, /quantised/],
    [{ hidden_size: 'big' }, /hidden_size must be an integer/],
    [{ layers_block_type: ['mamba'] }, /layers_block_type has 1 entries for 32 layers/],
  ])('refuses %j with an error naming the field', (config, pattern) => {
    const err = specError(config);
    expect(err).toBeInstanceOf(HubmoeError);
    expect(err.code).toBe('BAD_CONFIG');
    expect(err.message).toMatch(pattern);
  });
});

describe('family detection', () => {
  it('recognises Jamba by model_type or architectures', () => {
    expect(detectConverter(src({})).family).toBe('jamba');
    expect(detectConverter({ config: { architectures: ['JambaForCausalLM'] }, where: 'x', files: [] }).family).toBe('jamba');
  });

  it('lists the supported architectures for an unknown one', () => {
    const err = (() => {
      try {
        detectConverter({ config: { model_type: 'llama' }, where: 'x/config.json', files: [] });
      } catch (e) {
        return e as HubmoeError;
      }
    })()!;
    expect(err.code).toBe('UNSUPPORTED');
    expect(err.message).toMatch(/model_type "llama" is not a supported architecture/);
    expect(err.message).toMatch(/JambaForCausalLM/);
  });
});

describe('legacy remote-code tensor names', () => {
  it('converts B_layernorm / C_layernorm / pre_moe_layernorm / moe.* names to the same numbers', async () => {
    const dir = await tempDir();
    const ckpt = join(dir, 'ckpt');
    const { mkdir } = await import('node:fs/promises');
    await mkdir(ckpt);
    const srcDir = fixture('jamba-demo', 'checkpoint');
    for (const f of await readdir(srcDir)) if (f !== 'model.safetensors') await copyFile(join(srcDir, f), join(ckpt, f));
    const st = await SafetensorsFile.open(join(srcDir, 'model.safetensors'));
    const legacy = (n: string): string =>
      n
        .replace('.mamba.b_layernorm.', '.mamba.B_layernorm.')
        .replace('.mamba.c_layernorm.', '.mamba.C_layernorm.')
        .replace('.pre_ff_layernorm.', '.pre_moe_layernorm.')
        .replace(/\.feed_forward\.(gate|up|down)_proj\./, '.moe.experts.0.$1_proj.')
        .replace('.feed_forward.', '.moe.');
    const entries = await Promise.all(
      st.names().map(async (n) => {
        const e = st.entry(n);
        return { name: legacy(n), dtype: e.dtype, shape: e.shape, data: await st.readBytes(n) };
      }),
    );
    await st.close();
    expect(entries.some((e) => e.name.includes('.moe.experts.0.gate_proj'))).toBe(true);
    await writeSafetensors(join(ckpt, 'model.safetensors'), entries);
    await convert(ckpt, { outDir: join(dir, 'out') });
    const model = await loadModel(join(dir, 'out'), { threads: 1 });
    const ref = await Reference.open('jamba-demo');
    const got = await model.forward(await ref.rows('input_ids'));
    expect(relError(got.data, (await ref.floats('logits')).data)).toBeLessThanOrEqual(PARITY);
    await model.dispose();
    await ref.close();
  });
});

describe('canonical tensors', () => {
  it('maps per-expert and packed expert layouts onto the same stacked tensors', async () => {
    const a = await openCheckpoint(new LocalDirStore(fixture('jamba-odd', 'checkpoint')));
    const b = await openCheckpoint(new LocalDirStore(fixture('jamba-odd-packed', 'checkpoint')));
    const cfg = JSON.parse(await readFile(fixture('jamba-odd', 'checkpoint', 'config.json'), 'utf-8')) as Record<string, unknown>;
    const spec = jamba.toSpec(src(cfg), {});
    const ta = jamba.tensors(spec, a, src(cfg));
    const tb = jamba.tensors(spec, b, src(cfg));
    expect([...ta.keys()].sort()).toEqual([...tb.keys()].sort());
    for (const name of ['blocks.1.moe.gate.weight', 'blocks.1.moe.up.weight', 'blocks.9.moe.down.weight']) {
      const x = ta.get(name)!;
      const y = tb.get(name)!;
      expect(x.shape).toEqual(y.shape);
      for (let e = 0; e < x.parts.length; e++) expect(Array.from(await y.parts[e]!.read())).toEqual(Array.from(await x.parts[e]!.read()));
    }
    await a.close();
    await b.close();
  });
});

