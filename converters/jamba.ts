/**
 * Jamba (transformers' JambaForCausalLM, AI21's releases and the legacy remote-code layout).
 *
 * Each Jamba layer i becomes two sub-blocks: 2i = input_layernorm + mixer (Mamba or attention, from
 * the attention period/offset), 2i+1 = pre_ff_layernorm + feed-forward (MoE when
 * i % expert_layer_period == expert_layer_offset and num_experts > 1, else a dense SwiGLU MLP).
 * MoE routing: softmax over all experts in fp32, top-k, no renormalisation.
 */
import type { TensorSource } from '../src/io/checkpoint.js';
import type { CanonicalTensors } from '../src/schema/canonical.js';
import { SCHEMA_VERSION } from '../src/schema/spec.js';
import type { BlockSpec, ModelSpec, NormSpec } from '../src/schema/spec.js';
import { ConfigReader, TensorMapper, ceilDiv } from './common.js';
import type { ConverterOptions, FamilyConverter, SourceConfig } from './types.js';

/** JambaConfig's defaults, which transformers applies to keys a config.json leaves out. */
const DEFAULTS = {
  vocab_size: 65536,
  tie_word_embeddings: false,
  hidden_size: 4096,
  intermediate_size: 14336,
  num_hidden_layers: 32,
  num_attention_heads: 32,
  num_key_value_heads: 8,
  hidden_act: 'silu',
  rms_norm_eps: 1e-6,
  pad_token_id: 0,
  bos_token_id: 1,
  eos_token_id: 2,
  num_experts_per_tok: 2,
  num_experts: 16,
  expert_layer_period: 2,
  expert_layer_offset: 1,
  attn_layer_period: 8,
  attn_layer_offset: 4,
  mamba_d_state: 16,
  mamba_d_conv: 4,
  mamba_expand: 2,
  mamba_dt_rank: 'auto',
  mamba_conv_bias: true,
  mamba_proj_bias: false,
};

/** Legacy remote-code names → native names (applied to normalised tensor names). */
const LEGACY_RENAMES: Array<[RegExp, string]> = [
  [/\.mamba\.B_layernorm\./, '.mamba.b_layernorm.'],
  [/\.mamba\.C_layernorm\./, '.mamba.c_layernorm.'],
  [/\.pre_moe_layernorm\./, '.pre_ff_layernorm.'],
  [/\.moe\./, '.feed_forward.'],
];

export interface JambaSchedule {
  mixers: Array<'mamba' | 'attention'>;
  experts: number[];
}

/** Per-layer mixer kind and expert count, as JambaConfig derives them. */
export function jambaSchedule(cfg: ConfigReader, layers: number): JambaSchedule {
  const explicit = cfg.raw('layers_block_type');
  let mixers: Array<'mamba' | 'attention'>;
  if (Array.isArray(explicit)) {
    cfg.require(explicit.length === layers, 'layers_block_type', `has ${explicit.length} entries for ${layers} layers`);
    cfg.require(explicit.every((k) => k === 'mamba' || k === 'attention'), 'layers_block_type', 'entries must be "mamba" or "attention"');
    mixers = explicit as Array<'mamba' | 'attention'>;
  } else {
    const period = cfg.int('attn_layer_period');
    const offset = cfg.int('attn_layer_offset', 0);
    cfg.require(offset < period, 'attn_layer_offset', `(${offset}) must be less than attn_layer_period (${period})`);
    mixers = Array.from({ length: layers }, (_, i) => (i % period === offset ? 'attention' : 'mamba'));
  }
  const numExperts = cfg.int('num_experts');
  const explicitExperts = cfg.raw('layers_num_experts');
  let experts: number[];
  if (Array.isArray(explicitExperts)) {
    cfg.require(explicitExperts.length === layers && explicitExperts.every((n) => Number.isSafeInteger(n) && n >= 1), 'layers_num_experts', `must list a positive expert count for each of the ${layers} layers`);
    experts = explicitExperts as number[];
  } else {
    const period = cfg.int('expert_layer_period');
    const offset = cfg.int('expert_layer_offset', 0);
    cfg.require(offset < period, 'expert_layer_offset', `(${offset}) must be less than expert_layer_period (${period})`);
    experts = Array.from({ length: layers }, (_, i) => (i % period === offset ? numExperts : 1));
  }
  return { mixers, experts };
}

function toSpec(src: SourceConfig, _options: ConverterOptions): ModelSpec {
  const cfg = new ConfigReader(src, DEFAULTS);
  cfg.require(!cfg.has('quantization_config'), 'quantization_config', 'is set: quantised checkpoints (FP8, compressed-tensors) are not supported; convert the bf16 release');
  const H = cfg.int('hidden_size');
  const L = cfg.int('num_hidden_layers');
  const A = cfg.int('num_attention_heads');
  const KV = cfg.optInt('num_key_value_heads', 1) ?? A;
  cfg.require(A % KV === 0, 'num_key_value_heads', `(${KV}) must divide num_attention_heads (${A})`);
  let headDim = cfg.optInt('head_dim', 1);
  if (headDim === null) {
    cfg.require(H % A === 0, 'num_attention_heads', `(${A}) must divide hidden_size (${H})`);
    headDim = H / A;
  }
  const act = cfg.str('hidden_act');
  cfg.require(act === 'silu' || act === 'swish', 'hidden_act', `is "${act}"; Jamba's Mamba convolution and gates are only defined here for "silu"`);
  const eps = cfg.num('rms_norm_eps');
  const dState = cfg.int('mamba_d_state');
  const dConv = cfg.int('mamba_d_conv');
  cfg.require(dConv >= 2, 'mamba_d_conv', 'must be at least 2');
  const E = cfg.int('mamba_expand') * H;
  const rankRaw = cfg.raw('mamba_dt_rank');
  const dtRank = rankRaw === 'auto' || rankRaw === undefined || rankRaw === null ? ceilDiv(H, 16) : cfg.int('mamba_dt_rank');
  const innerNorms = cfg.raw('mamba_inner_layernorms') === false ? false : true;
  const I = cfg.int('intermediate_size');
  const topK = cfg.int('num_experts_per_tok');
  const { mixers, experts } = jambaSchedule(cfg, L);
  const norm: NormSpec = { kind: 'rms', eps, bias: false };
  const blocks: BlockSpec[] = [];
  for (let i = 0; i < L; i++) {
    if (mixers[i] === 'attention') {
      blocks.push({ norm, source_layer: i, op: { kind: 'attention', heads: A, kv_heads: KV, head_dim: headDim, qkv_bias: false, o_bias: false, positional: 'none' } });
    } else {
      blocks.push({
        norm,
        source_layer: i,
        op: {
          kind: 'mamba',
          d_inner: E,
          d_state: dState,
          d_conv: dConv,
          dt_rank: dtRank,
          conv_bias: cfg.bool('mamba_conv_bias'),
          proj_bias: cfg.bool('mamba_proj_bias'),
          inner_norms: innerNorms,
          eps,
        },
      });
    }
    const X = experts[i]!;
    if (X > 1) {
      cfg.require(topK <= X, 'num_experts_per_tok', `(${topK}) exceeds num_experts (${X})`);
      blocks.push({
        norm,
        source_layer: i,
        op: { kind: 'moe', experts: X, top_k: topK, router: { act: 'softmax', renormalize: false, bias: false }, expert: { hidden: I, act: 'silu', glu: true, bias: false } },
      });
    } else {
      blocks.push({ norm, source_layer: i, op: { kind: 'mlp', hidden: I, act: 'silu', glu: true, bias: false } });
    }
  }
  const V = cfg.int('vocab_size');
  const dtype = cfg.raw('dtype') ?? cfg.raw('torch_dtype');
  return {
    schema: SCHEMA_VERSION,
    family: 'jamba',
    hidden: H,
    vocab: { size: V, padded_size: V, bos: cfg.optInt('bos_token_id'), eos: cfg.intList('eos_token_id'), pad: cfg.optInt('pad_token_id') },
    tie_embeddings: cfg.bool('tie_word_embeddings'),
    lm_head_bias: false,
    blocks,
    final_norm: norm,
    source: { format: 'safetensors', files: [], architecture: 'JambaForCausalLM', dtype: typeof dtype === 'string' ? dtype : undefined },
  };
}

function normalisedNames(source: TensorSource): Map<string, string> {
  const out = new Map<string, string>();
  for (const name of source.names()) {
    let n = name;
    for (const [re, to] of LEGACY_RENAMES) n = n.replace(re, to);
    out.set(n, name);
  }
  return out;
}

function tensors(spec: ModelSpec, source: TensorSource, src: SourceConfig): CanonicalTensors {
  const m = new TensorMapper(source, normalisedNames(source));
  m.direct('embed.weight', 'model.embed_tokens.weight');
  m.direct('final_norm.weight', 'model.final_layernorm.weight');
  if (spec.tie_embeddings) m.skip('lm_head.weight');
  else m.direct('lm_head.weight', 'lm_head.weight');
  spec.blocks.forEach((block, j) => {
    const i = block.source_layer!;
    const L = `model.layers.${i}`;
    const B = `blocks.${j}`;
    const op = block.op;
    switch (op.kind) {
      case 'mamba': {
        m.direct(`${B}.norm.weight`, `${L}.input_layernorm.weight`);
        const names = ['in_proj.weight', 'conv1d.weight', 'x_proj.weight', 'dt_proj.weight', 'dt_proj.bias', 'A_log', 'D', 'out_proj.weight'];
        if (op.conv_bias) names.push('conv1d.bias');
        if (op.proj_bias) names.push('in_proj.bias', 'out_proj.bias');
        for (const t of names) m.direct(`${B}.mamba.${t}`, `${L}.mamba.${t}`);
        if (op.inner_norms) {
          m.direct(`${B}.mamba.dt_norm.weight`, `${L}.mamba.dt_layernorm.weight`);
          m.direct(`${B}.mamba.b_norm.weight`, `${L}.mamba.b_layernorm.weight`);
          m.direct(`${B}.mamba.c_norm.weight`, `${L}.mamba.c_layernorm.weight`);
        }
        break;
      }
      case 'attention':
        m.direct(`${B}.norm.weight`, `${L}.input_layernorm.weight`);
        for (const x of ['q', 'k', 'v', 'o']) m.direct(`${B}.attn.${x}.weight`, `${L}.self_attn.${x}_proj.weight`);
        break;
      case 'mlp': {
        m.direct(`${B}.norm.weight`, `${L}.pre_ff_layernorm.weight`);
        // A dense layer stored as a one-expert MoE (legacy layout) reads experts.0.
        const base = m.has(`${L}.feed_forward.gate_proj.weight`) ? `${L}.feed_forward` : `${L}.feed_forward.experts.0`;
        for (const x of ['gate', 'up', 'down']) m.direct(`${B}.mlp.${x}.weight`, `${base}.${x}_proj.weight`);
        break;
      }
      case 'moe': {
        m.direct(`${B}.norm.weight`, `${L}.pre_ff_layernorm.weight`);
        m.direct(`${B}.moe.router.weight`, `${L}.feed_forward.router.weight`);
        const X = op.experts;
        const I = op.expert.hidden;
        const H = spec.hidden;
        const ff = `${L}.feed_forward.experts`;
        if (m.has(`${ff}.gate_up_proj`)) {
          // Packed (transformers v5 in memory): gate_up_proj [X, 2I, H] gate rows first, down_proj [X, H, I].
          const gu = `${ff}.gate_up_proj`;
          m.part(gu, 0, 0, [X, 2 * I, H]);
          m.part(`${ff}.down_proj`, 0, 0, [X, H, I]);
          m.parts(`${B}.moe.gate.weight`, [X, I, H], Array.from({ length: X }, (_, e) => m.part(gu, e * 2 * I * H, I * H)), gu);
          m.parts(`${B}.moe.up.weight`, [X, I, H], Array.from({ length: X }, (_, e) => m.part(gu, e * 2 * I * H + I * H, I * H)), gu);
          m.parts(`${B}.moe.down.weight`, [X, H, I], Array.from({ length: X }, (_, e) => m.part(`${ff}.down_proj`, e * H * I, H * I)), `${ff}.down_proj`);
        } else {
          for (const x of ['gate', 'up', 'down']) {
            const one = x === 'down' ? [H, I] : [I, H];
            const names = Array.from({ length: X }, (_, e) => `${ff}.${e}.${x}_proj.weight`);
            m.parts(`${B}.moe.${x}.weight`, [X, ...one], names.map((n) => m.part(n, undefined, undefined, one)), names[0]!);
          }
        }
        break;
      }
    }
  });
  return m.finish(src.where);
}

export const jamba: FamilyConverter = {
  family: 'jamba',
  architectures: ['JambaForCausalLM (model_type "jamba")'],
  detect: (src) => src.config.model_type === 'jamba' || (Array.isArray(src.config.architectures) && src.config.architectures.includes('JambaForCausalLM')),
  toSpec,
  tensors,
};
