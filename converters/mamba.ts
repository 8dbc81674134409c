/**
 * Mamba-1: transformers' MambaForCausalLM (`backbone.embeddings`, `backbone.layers.{i}.mixer`,
 * `backbone.norm_f`), and the original state-spaces / mamba_ssm checkpoints (config keys d_model,
 * n_layer, ssm_cfg, rms_norm, pad_vocab_size_multiple; `backbone.embedding`; pytorch_model.bin).
 * Every block is `h = h + mixer(norm(h))`; the LM head is tied to the embedding unless the config
 * says otherwise.
 */
import type { TensorSource } from '../src/io/checkpoint.js';
import type { CanonicalTensors } from '../src/schema/canonical.js';
import { SCHEMA_VERSION } from '../src/schema/spec.js';
import type { MambaOp, ModelSpec, NormSpec } from '../src/schema/spec.js';
import { ConfigReader, GPT_NEOX_TOKENIZER, TensorMapper, ceilDiv } from './common.js';
import type { ConverterOptions, FamilyConverter, JsonObject, SourceConfig } from './types.js';

/** transformers' MambaConfig defaults. */
const HF_DEFAULTS = {
  vocab_size: 50280,
  hidden_size: 768,
  state_size: 16,
  num_hidden_layers: 32,
  layer_norm_epsilon: 1e-5,
  pad_token_id: 0,
  bos_token_id: 0,
  eos_token_id: 0,
  expand: 2,
  conv_kernel: 4,
  use_bias: false,
  use_conv_bias: true,
  hidden_act: 'silu',
  time_step_rank: 'auto',
  tie_word_embeddings: true,
};

/** mamba_ssm's MambaConfig / Mamba defaults. */
const SS_DEFAULTS = {
  d_model: 2560,
  n_layer: 64,
  vocab_size: 50277,
  rms_norm: true,
  norm_epsilon: 1e-5,
  pad_vocab_size_multiple: 8,
  tie_embeddings: true,
};

function isStateSpaces(config: JsonObject): boolean {
  return 'd_model' in config && 'n_layer' in config;
}

function hfSpec(src: SourceConfig): ModelSpec {
  const cfg = new ConfigReader(src, HF_DEFAULTS);
  const H = cfg.int('hidden_size');
  const act = cfg.str('hidden_act');
  cfg.require(act === 'silu' || act === 'swish', 'hidden_act', `is "${act}"; the Mamba convolution and gate are only defined here for "silu"`);
  const rank = cfg.raw('time_step_rank');
  const eps = cfg.num('layer_norm_epsilon');
  const op: MambaOp = {
    kind: 'mamba',
    d_inner: cfg.has('intermediate_size') ? cfg.int('intermediate_size') : cfg.int('expand') * H,
    d_state: cfg.int('state_size'),
    d_conv: cfg.int('conv_kernel'),
    dt_rank: rank === 'auto' ? ceilDiv(H, 16) : cfg.int('time_step_rank'),
    conv_bias: cfg.bool('use_conv_bias'),
    proj_bias: cfg.bool('use_bias'),
    inner_norms: false,
    eps,
  };
  cfg.require(op.d_conv >= 2, 'conv_kernel', 'must be at least 2');
  const norm: NormSpec = { kind: 'rms', eps, bias: false };
  const V = cfg.int('vocab_size');
  const eos = cfg.intList('eos_token_id');
  return {
    schema: SCHEMA_VERSION,
    family: 'mamba',
    hidden: H,
    vocab: { size: V, padded_size: V, bos: cfg.optInt('bos_token_id'), eos, pad: cfg.optInt('pad_token_id') },
    tie_embeddings: cfg.bool('tie_word_embeddings'),
    lm_head_bias: false,
    blocks: Array.from({ length: cfg.int('num_hidden_layers') }, (_, i) => ({ norm, op, source_layer: i })),
    final_norm: norm,
    source: { format: 'safetensors', files: [], architecture: 'MambaForCausalLM' },
  };
}

function ssSpec(src: SourceConfig): ModelSpec {
  const cfg = new ConfigReader(src, SS_DEFAULTS);
  const H = cfg.int('d_model');
  const ssm = (cfg.raw('ssm_cfg') ?? {}) as JsonObject;
  const sub = new ConfigReader({ ...src, config: ssm, where: `${src.where} ssm_cfg` }, { d_state: 16, d_conv: 4, expand: 2, dt_rank: 'auto', conv_bias: true, bias: false, layer: 'Mamba1' });
  sub.require(sub.raw('layer') === 'Mamba1', 'layer', `is "${String(sub.raw('layer'))}"; only Mamba-1 layers are supported`);
  const attn = cfg.raw('attn_layer_idx');
  cfg.require(attn === undefined || (Array.isArray(attn) && attn.length === 0), 'attn_layer_idx', 'lists attention layers; mamba_ssm hybrids with attention are not supported');
  const eps = cfg.num('norm_epsilon');
  const norm: NormSpec = cfg.bool('rms_norm') ? { kind: 'rms', eps, bias: false } : { kind: 'layer', eps, bias: true };
  const rank = sub.raw('dt_rank');
  const op: MambaOp = {
    kind: 'mamba',
    d_inner: sub.int('expand') * H,
    d_state: sub.int('d_state'),
    d_conv: sub.int('d_conv'),
    dt_rank: rank === 'auto' ? ceilDiv(H, 16) : sub.int('dt_rank'),
    conv_bias: sub.bool('conv_bias'),
    proj_bias: sub.bool('bias'),
    inner_norms: false,
    eps,
  };
  // mamba_ssm pads the vocabulary to a multiple of pad_vocab_size_multiple.
  const vocab = cfg.int('vocab_size');
  const multiple = cfg.int('pad_vocab_size_multiple');
  const padded = Math.ceil(vocab / multiple) * multiple;
  return {
    schema: SCHEMA_VERSION,
    family: 'mamba',
    hidden: H,
    // GPT-NeoX-20B's <|endoftext|> (id 0), the tokenizer of the state-spaces models.
    vocab: { size: vocab, padded_size: padded, bos: 0, eos: [0], pad: null },
    tie_embeddings: cfg.bool('tie_embeddings'),
    lm_head_bias: false,
    blocks: Array.from({ length: cfg.int('n_layer') }, (_, i) => ({ norm, op, source_layer: i })),
    final_norm: norm,
    source: { format: 'pytorch', files: [], architecture: 'MambaLMHeadModel (mamba_ssm)' },
  };
}

function tensors(spec: ModelSpec, source: TensorSource, src: SourceConfig): CanonicalTensors {
  const m = new TensorMapper(source);
  m.direct('embed.weight', m.has('backbone.embeddings.weight') ? 'backbone.embeddings.weight' : 'backbone.embedding.weight');
  if (spec.tie_embeddings) m.skip('lm_head.weight');
  else m.direct('lm_head.weight', 'lm_head.weight');
  m.direct('final_norm.weight', 'backbone.norm_f.weight');
  if (spec.final_norm.bias) m.direct('final_norm.bias', 'backbone.norm_f.bias');
  spec.blocks.forEach((block, j) => {
    const L = `backbone.layers.${block.source_layer}`;
    const B = `blocks.${j}`;
    m.direct(`${B}.norm.weight`, `${L}.norm.weight`);
    if (block.norm.bias) m.direct(`${B}.norm.bias`, `${L}.norm.bias`);
    const op = block.op as MambaOp;
    const names = ['in_proj.weight', 'conv1d.weight', 'x_proj.weight', 'dt_proj.weight', 'dt_proj.bias', 'A_log', 'D', 'out_proj.weight'];
    if (op.conv_bias) names.push('conv1d.bias');
    if (op.proj_bias) names.push('in_proj.bias', 'out_proj.bias');
    for (const t of names) m.direct(`${B}.mamba.${t}`, `${L}.mixer.${t}`);
  });
  return m.finish(src.where);
}

export const mamba: FamilyConverter = {
  tokenizerRepo: GPT_NEOX_TOKENIZER,
  family: 'mamba',
  architectures: ['MambaForCausalLM (model_type "mamba")', 'state-spaces mamba_ssm checkpoints (d_model, n_layer, ssm_cfg)'],
  detect: (src) =>
    src.config.model_type === 'mamba' ||
    (Array.isArray(src.config.architectures) && src.config.architectures.includes('MambaForCausalLM')) ||
    (src.config.model_type === undefined && isStateSpaces(src.config)),
  toSpec: (src: SourceConfig, _options: ConverterOptions) => (isStateSpaces(src.config) && !('hidden_size' in src.config) ? ssSpec(src) : hfSpec(src)),
  tensors,
};
