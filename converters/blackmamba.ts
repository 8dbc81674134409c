/**
 * BlackMamba (Zyphra) and MoE-Mamba, read the way Zyphra's reference code (Zyphra/BlackMamba,
 * mamba_model.py / mamba_block.py / switch_mlp.py / mlp.py) reads them.
 *
 * Config: Megatron-style keys (num_layers, hidden_size, state_size, conv_dimension, vocab_size,
 * expansion_factor, mamba_moe_layers, ffn_hidden_size, add_bias_linear, swiglu, max_sequence_length).
 * Block i is described by mamba_moe_layers[i]:
 *   "r"          Mamba block (RMSNorm + Mamba mixer)
 *   "1…"         a dense MLP block (any entry starting with "1", so "16" is a dense MLP too)
 *   anything else MoE block whose expert count is int(last character) — exactly as the reference
 *                parses it, so "32" means 2 experts
 *   "r1", "r8"…  Mamba with a parallel MLP/MoE: not a residual sub-block chain, refused
 * An empty list means all Mamba.
 *
 * Routing (SwitchMLP): routing_mode "sinkhorn" (the default, BlackMamba) scores with sigmoid(router(x))
 * and picks the top-1 expert, scaling its output by that score; any other mode (MoE-Mamba's "top1")
 * uses softmax, top-1, scaled by the softmax probability. Experts: linear_fc1 → act → linear_fc2;
 * with swiglu (gated_linear_unit) linear_fc1 is [2F, H] and its first half goes through the
 * activation (act(a) · b). The activation is the reference's default F.gelu, the exact erf form, even
 * though the paper describes SwiGLU experts; `--expert-act silu` gives the paper's version.
 * Norms: RMSNorm (eps 1e-5) per block, a LayerNorm with bias before the output layer, which is tied
 * to the embedding and has a bias when add_bias_linear.
 */
import type { TensorSource } from '../src/io/checkpoint.js';
import type { CanonicalTensors } from '../src/schema/canonical.js';
import { ACTIVATIONS, SCHEMA_VERSION } from '../src/schema/spec.js';
import type { Activation, BlockSpec, Family, ModelSpec, NormSpec } from '../src/schema/spec.js';
import { ConfigReader, GPT_NEOX_TOKENIZER, TensorMapper, ceilDiv } from './common.js';
import type { ConverterOptions, FamilyConverter, SourceConfig } from './types.js';

/** MambaConfig's defaults for keys config.json may leave out. */
const DEFAULTS = {
  expansion_factor: 2,
  conv_bias: true,
  dt_rank: 'auto',
  rms_norm: true,
  layernorm_epsilon: 1e-5,
  routing_mode: 'sinkhorn',
  mamba_moe_layers: [],
  add_bias_linear: true,
  swiglu: false,
};

const ACT_NAMES: Record<string, Activation> = {
  gelu: 'gelu_erf',
  gelu_erf: 'gelu_erf',
  gelu_tanh: 'gelu_tanh',
  gelu_new: 'gelu_tanh',
  silu: 'silu',
  swish: 'silu',
  relu: 'relu',
};

export function isMegatronMambaConfig(config: Record<string, unknown>): boolean {
  return ['num_layers', 'hidden_size', 'state_size', 'conv_dimension'].every((k) => k in config);
}

function routingIsSoftmax(cfg: ConfigReader): boolean {
  const mode = cfg.raw('routing_mode');
  return typeof mode === 'string' && mode !== 'sinkhorn';
}

function layerEntries(cfg: ConfigReader, layers: number): string[] {
  const raw = cfg.raw('mamba_moe_layers');
  const list = typeof raw === 'string' ? raw.split(/[\s,]+/).filter(Boolean) : raw;
  cfg.require(Array.isArray(list) && list.every((x) => typeof x === 'string' && x.length > 0), 'mamba_moe_layers', 'must be a list of strings such as ["r", "8", …]');
  const entries = list as string[];
  if (entries.length === 0) return Array.from({ length: layers }, () => 'r');
  cfg.require(entries.length >= layers, 'mamba_moe_layers', `has ${entries.length} entries for num_layers ${layers}`);
  return entries.slice(0, layers);
}

function expertActivation(cfg: ConfigReader, options: ConverterOptions): Activation {
  if (options.expertAct) return options.expertAct;
  for (const key of ['activation', 'activation_func', 'hidden_act']) {
    const v = cfg.raw(key);
    if (typeof v === 'string') {
      const act = ACT_NAMES[v] ?? (ACTIVATIONS as readonly string[]).find((a) => a === v);
      cfg.require(act !== undefined, key, `"${v}" is not an activation hubmoe knows (${Object.keys(ACT_NAMES).join(', ')})`);
      return act as Activation;
    }
  }
  return 'gelu_erf';
}

function toSpec(family: Family, src: SourceConfig, options: ConverterOptions): ModelSpec {
  const cfg = new ConfigReader(src, DEFAULTS);
  const H = cfg.int('hidden_size');
  const L = cfg.int('num_layers');
  const N = cfg.int('state_size');
  const K = cfg.int('conv_dimension');
  cfg.require(K >= 2, 'conv_dimension', 'must be at least 2');
  const E = cfg.int('expansion_factor') * H;
  const rankRaw = cfg.raw('dt_rank');
  const R = rankRaw === 'auto' ? ceilDiv(H, 16) : cfg.int('dt_rank');
  cfg.require(cfg.raw('rms_norm') !== false, 'rms_norm', 'is false; the reference code only builds blocks with RMSNorm');
  const eps = cfg.num('layernorm_epsilon');
  const bias = cfg.bool('add_bias_linear');
  const glu = cfg.bool('swiglu');
  const act = expertActivation(cfg, options);
  const softmax = routingIsSoftmax(cfg);
  const rms: NormSpec = { kind: 'rms', eps, bias: false };
  const blocks: BlockSpec[] = [];
  const entries = layerEntries(cfg, L);
  entries.forEach((entry, i) => {
    if (entry[0] === 'r') {
      cfg.require(entry.length === 1, 'mamba_moe_layers', `entry ${i} is "${entry}": Mamba blocks with a parallel MLP/MoE are not supported`);
      blocks.push({
        norm: rms,
        source_layer: i,
        op: { kind: 'mamba', d_inner: E, d_state: N, d_conv: K, dt_rank: R, conv_bias: cfg.bool('conv_bias'), proj_bias: bias, inner_norms: false, eps },
      });
      return;
    }
    const F = cfg.int('ffn_hidden_size');
    if (entry[0] === '1') {
      blocks.push({ norm: rms, source_layer: i, op: { kind: 'mlp', hidden: F, act, glu, bias } });
      return;
    }
    const X = Number.parseInt(entry[entry.length - 1]!, 10);
    cfg.require(Number.isInteger(X) && X >= 1, 'mamba_moe_layers', `entry ${i} is "${entry}": the reference code reads the expert count from its last character, which is not a digit ≥ 1`);
    blocks.push({
      norm: rms,
      source_layer: i,
      op: { kind: 'moe', experts: X, top_k: 1, router: { act: softmax ? 'softmax' : 'sigmoid', renormalize: false, bias: true }, expert: { hidden: F, act, glu, bias } },
    });
  });
  const V = cfg.int('vocab_size');
  const eos = cfg.intList('eos_token_id');
  return {
    schema: SCHEMA_VERSION,
    family,
    hidden: H,
    // GPT-NeoX-20B's <|endoftext|> (id 0) is BOS and EOS unless the config names others.
    vocab: { size: V, padded_size: V, bos: cfg.optInt('bos_token_id') ?? 0, eos: eos.length ? eos : [0], pad: cfg.optInt('pad_token_id') },
    tie_embeddings: true,
    lm_head_bias: bias,
    blocks,
    final_norm: { kind: 'layer', eps, bias: true },
    source: { format: 'pytorch', files: [], architecture: family === 'moe-mamba' ? 'MoE-Mamba (BlackMamba layout, top1 routing)' : 'BlackMamba (Zyphra MambaModel)' },
  };
}

function tensors(spec: ModelSpec, source: TensorSource, src: SourceConfig): CanonicalTensors {
  const m = new TensorMapper(source);
  m.direct('embed.weight', m.has('embedding.word_embeddings.weight') ? 'embedding.word_embeddings.weight' : 'embedding.weight');
  // The output layer is the embedding (the reference loader copies it there); a saved copy is ignored.
  m.skip('output_layer.weight');
  if (spec.lm_head_bias) m.direct('lm_head.bias', 'output_layer.bias');
  m.direct('final_norm.weight', 'decoder.final_layernorm.weight');
  m.direct('final_norm.bias', 'decoder.final_layernorm.bias');
  const H = spec.hidden;
  spec.blocks.forEach((block, j) => {
    const L = `decoder.layers.${block.source_layer}`;
    const B = `blocks.${j}`;
    m.direct(`${B}.norm.weight`, `${L}.norm.weight`);
    const op = block.op;
    if (op.kind === 'mamba') {
      const names = ['in_proj.weight', 'conv1d.weight', 'x_proj.weight', 'dt_proj.weight', 'dt_proj.bias', 'A_log', 'D', 'out_proj.weight'];
      if (op.conv_bias) names.push('conv1d.bias');
      if (op.proj_bias) names.push('in_proj.bias', 'out_proj.bias');
      for (const t of names) m.direct(`${B}.mamba.${t}`, `${L}.mixer.${t}`);
      return;
    }
    const e = op.kind === 'mlp' ? op : op.kind === 'moe' ? op.expert : undefined;
    if (!e) return;
    const F = e.hidden;
    // fc1 [F or 2F, H]: with GLU, rows [0, F) are activated (gate), rows [F, 2F) are linear (up).
    const expertParts = (prefix: string) => {
      const fc1 = `${prefix}.linear_fc1.weight`;
      const fc2 = `${prefix}.linear_fc2.weight`;
      m.part(fc1, 0, 0, [e.glu ? 2 * F : F, H]);
      m.part(fc2, 0, 0, [H, F]);
      const out = {
        gate: e.glu ? m.part(fc1, 0, F * H) : undefined,
        up: m.part(fc1, e.glu ? F * H : 0, F * H),
        down: m.part(fc2),
        gateBias: undefined as ReturnType<typeof m.part> | undefined,
        upBias: undefined as ReturnType<typeof m.part> | undefined,
        downBias: undefined as ReturnType<typeof m.part> | undefined,
      };
      if (e.bias) {
        m.part(`${prefix}.linear_fc1.bias`, 0, 0, [e.glu ? 2 * F : F]);
        m.part(`${prefix}.linear_fc2.bias`, 0, 0, [H]);
        out.gateBias = e.glu ? m.part(`${prefix}.linear_fc1.bias`, 0, F) : undefined;
        out.upBias = m.part(`${prefix}.linear_fc1.bias`, e.glu ? F : 0, F);
        out.downBias = m.part(`${prefix}.linear_fc2.bias`);
      }
      return out;
    };
    if (op.kind === 'mlp') {
      const p = expertParts(`${L}.mixer`);
      if (p.gate) m.parts(`${B}.mlp.gate.weight`, [F, H], [p.gate], `${L}.mixer.linear_fc1.weight`);
      m.parts(`${B}.mlp.up.weight`, [F, H], [p.up], `${L}.mixer.linear_fc1.weight`);
      m.parts(`${B}.mlp.down.weight`, [H, F], [p.down], `${L}.mixer.linear_fc2.weight`);
      if (p.gateBias) m.parts(`${B}.mlp.gate.bias`, [F], [p.gateBias], `${L}.mixer.linear_fc1.bias`);
      if (p.upBias) m.parts(`${B}.mlp.up.bias`, [F], [p.upBias], `${L}.mixer.linear_fc1.bias`);
      if (p.downBias) m.parts(`${B}.mlp.down.bias`, [H], [p.downBias], `${L}.mixer.linear_fc2.bias`);
      return;
    }
    if (op.kind !== 'moe') return;
    const X = op.experts;
    m.direct(`${B}.moe.router.weight`, `${L}.mixer.router.weight`);
    m.direct(`${B}.moe.router.bias`, `${L}.mixer.router.bias`);
    const experts = Array.from({ length: X }, (_, x) => expertParts(`${L}.mixer.local_experts.${x}`));
    const origin = `${L}.mixer.local_experts.*`;
    if (e.glu) m.parts(`${B}.moe.gate.weight`, [X, F, H], experts.map((p) => p.gate!), origin);
    m.parts(`${B}.moe.up.weight`, [X, F, H], experts.map((p) => p.up), origin);
    m.parts(`${B}.moe.down.weight`, [X, H, F], experts.map((p) => p.down), origin);
    if (e.bias) {
      if (e.glu) m.parts(`${B}.moe.gate.bias`, [X, F], experts.map((p) => p.gateBias!), origin);
      m.parts(`${B}.moe.up.bias`, [X, F], experts.map((p) => p.upBias!), origin);
      m.parts(`${B}.moe.down.bias`, [X, H], experts.map((p) => p.downBias!), origin);
    }
  });
  return m.finish(src.where);
}

export const blackmamba: FamilyConverter = {
  tokenizerRepo: GPT_NEOX_TOKENIZER,
  family: 'blackmamba',
  architectures: ['BlackMamba (Zyphra Megatron-style config: num_layers, state_size, conv_dimension, mamba_moe_layers; pytorch_model.bin)'],
  detect: (src) =>
    src.config.model_type === 'blackmamba' || (src.config.model_type === undefined && isMegatronMambaConfig(src.config) && !routingIsSoftmax(new ConfigReader(src, DEFAULTS))),
  toSpec: (src, options) => toSpec('blackmamba', src, options),
  tensors,
};

export const moeMamba: FamilyConverter = {
  tokenizerRepo: GPT_NEOX_TOKENIZER,
  family: 'moe-mamba',
  architectures: ['MoE-Mamba (the BlackMamba layout with routing_mode "top1": softmax top-1 Switch routing)'],
  detect: (src) =>
    src.config.model_type === 'moe-mamba' || src.config.model_type === 'moe_mamba' || (src.config.model_type === undefined && isMegatronMambaConfig(src.config) && routingIsSoftmax(new ConfigReader(src, DEFAULTS))),
  toSpec: (src, options) => {
    const spec = toSpec('moe-mamba', { ...src, config: { routing_mode: 'top1', ...src.config } }, options);
    return spec;
  },
  tensors,
};
