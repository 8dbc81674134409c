/** A small valid ModelSpec (hubmoe.json) for card and publish tests. */
import type { ModelSpec } from '../../src/schema/spec.js';

export function tinySpec(overrides: Partial<ModelSpec> = {}): ModelSpec {
  const norm = { kind: 'rms' as const, eps: 1e-5, bias: false };
  return {
    schema: 'hubmoe/1',
    family: 'blackmamba',
    hidden: 8,
    vocab: { size: 30, padded_size: 32, bos: 1, eos: [2], pad: null },
    tie_embeddings: true,
    lm_head_bias: false,
    blocks: [
      {
        norm,
        op: { kind: 'mamba', d_inner: 16, d_state: 4, d_conv: 4, dt_rank: 2, conv_bias: true, proj_bias: false, inner_norms: false, eps: 1e-5 },
      },
      {
        norm,
        op: {
          kind: 'moe',
          experts: 4,
          top_k: 1,
          router: { act: 'softmax', renormalize: false, bias: false },
          expert: { hidden: 12, act: 'gelu_erf', glu: false, bias: false },
        },
      },
    ],
    final_norm: norm,
    source: {
      repo: 'Zyphra/BlackMamba-tiny',
      revision: 'main',
      commit: '0123456789abcdef0123456789abcdef01234567',
      format: 'safetensors',
      files: ['model.safetensors'],
      architecture: 'BlackMamba',
      dtype: 'bf16',
    },
    export: { target: 'portable', dtypes: ['fp32', 'fp16'], hubmoe_version: '0.1.0' },
    ...overrides,
  };
}
