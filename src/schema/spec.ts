/**
 * ModelSpec (`hubmoe.json`), the unified schema every family maps onto: an embedding, a sequence of
 * residual sub-blocks `h = h + op(norm(h))`, a final norm and an LM head. Documented field by field
 * in docs/schema.md.
 */

export const SCHEMA_VERSION = 'hubmoe/1';

export type Family = 'jamba' | 'blackmamba' | 'mamba' | 'moe-mamba';
export const FAMILIES: readonly Family[] = ['jamba', 'blackmamba', 'mamba', 'moe-mamba'];

export type Activation = 'silu' | 'gelu_erf' | 'gelu_tanh' | 'relu';
export const ACTIVATIONS: readonly Activation[] = ['silu', 'gelu_erf', 'gelu_tanh', 'relu'];

export interface NormSpec {
  kind: 'rms' | 'layer';
  eps: number;
  /** LayerNorm only: a bias (beta) tensor exists. */
  bias: boolean;
}

export interface MambaOp {
  kind: 'mamba';
  d_inner: number;
  d_state: number;
  d_conv: number;
  dt_rank: number;
  conv_bias: boolean;
  /** Bias on in_proj and out_proj. */
  proj_bias: boolean;
  /** Jamba's RMSNorms over dt, B and C between x_proj and the scan. */
  inner_norms: boolean;
  /** Epsilon of the inner norms (ignored without them). */
  eps: number;
}

export interface AttentionOp {
  kind: 'attention';
  heads: number;
  kv_heads: number;
  head_dim: number;
  /** Bias on the q, k and v projections. */
  qkv_bias: boolean;
  /** Bias on the output projection. */
  o_bias: boolean;
  positional: 'none';
}

export interface MlpOp {
  kind: 'mlp';
  /** Intermediate width. */
  hidden: number;
  act: Activation;
  /** Gated: act(gate(x)) * up(x); else act(up(x)). */
  glu: boolean;
  bias: boolean;
}

export interface ExpertSpec {
  hidden: number;
  act: Activation;
  glu: boolean;
  bias: boolean;
}

export interface RouterSpec {
  /** Score function over the router logits. */
  act: 'softmax' | 'sigmoid';
  /** Divide the top-k scores by their sum. */
  renormalize: boolean;
  bias: boolean;
}

export interface MoeOp {
  kind: 'moe';
  experts: number;
  top_k: number;
  router: RouterSpec;
  expert: ExpertSpec;
}

export type BlockOp = MambaOp | AttentionOp | MlpOp | MoeOp;
export type BlockKind = BlockOp['kind'];

export interface BlockSpec {
  norm: NormSpec;
  op: BlockOp;
  /** The source model's layer this sub-block came from (informational). */
  source_layer?: number;
}

export interface VocabSpec {
  /** Tokens the tokenizer knows; logits at or past this index are never sampled. */
  size: number;
  /** Rows of the embedding and LM head (≥ size). */
  padded_size: number;
  bos: number | null;
  eos: number[];
  pad: number | null;
}

export interface SourceSpec {
  /** Hub repo id, when converted from the Hub. */
  repo?: string;
  /** Local directory, when converted from disk. */
  path?: string;
  revision?: string;
  commit?: string;
  format: 'safetensors' | 'pytorch';
  files: string[];
  /** The original config's model_type / architecture, for the record. */
  architecture?: string;
  /** Storage dtype of the source weights. */
  dtype?: string;
}

/** The FC inputs SCAP can sparsify, by the layer reading them. */
export type ScapLayerType = 'mamba_in' | 'mamba_out' | 'attn_qkv' | 'attn_o' | 'mlp_up' | 'mlp_down' | 'expert_up' | 'expert_down';
export const SCAP_LAYER_TYPES: readonly ScapLayerType[] = ['mamba_in', 'mamba_out', 'attn_qkv', 'attn_o', 'mlp_up', 'mlp_down', 'expert_up', 'expert_down'];

/** One sparsified FC input ("site"): its layer type, target and calibrated values. */
export interface ScapSiteSpec {
  type: ScapLayerType;
  /** Target sparsity (fraction of zeroed inputs). */
  target: number;
  /** Mode m subtracted before thresholding (0 without Mode-Centering); m·W·1 is folded into the bias. */
  mode: number;
  /** Inputs with |x − m| ≤ threshold are zeroed. */
  threshold: number;
  /** ONNX initializers holding the folded biases b + m·W·1 of the layers reading this input (none when m = 0). */
  bias: string[];
  /** Sparsity reached on the calibration tokens. */
  calibration_sparsity: number;
  /** Calibration values seen (tokens × channels). */
  calibration_values: number;
}

/** SCAP activation pruning (written by `hubmoe prune`; docs/scap.md). */
export interface ScapSpec {
  method: 'scap' | 'teal';
  mode_centering: 'auto' | 'off';
  /** The --sparsity specification as given. */
  sparsity: string;
  calibration: { file: string; sha256: string; tokens: number; window: number };
  sites: Record<string, ScapSiteSpec>;
  /** Perplexities measured by `hubmoe prune --ppl` (dense and pruned), for the model card. */
  evaluation?: {
    file: string;
    sha256: string;
    tokens: number;
    dense: number;
    pruned: number;
    /** Sparsity reached on the evaluation text, per layer type (zeroed / seen inputs). */
    achieved?: Record<string, number>;
  };
}

/** How the model dir was produced (written by the exporter). */
export interface ExportSpec {
  target: 'portable' | 'fused';
  /** ONNX files written, by dtype: fp32 → onnx/model.onnx, fp16 → onnx/model_fp16.onnx. */
  dtypes: Array<'fp32' | 'fp16'>;
  hubmoe_version: string;
  /** Options that change the graph's numbers (e.g. an expert activation override). */
  options?: Record<string, string | number | boolean>;
}

export interface ModelSpec {
  schema: typeof SCHEMA_VERSION;
  family: Family;
  hidden: number;
  vocab: VocabSpec;
  tie_embeddings: boolean;
  /** The LM head has a bias (`lm_head.bias`). */
  lm_head_bias: boolean;
  blocks: BlockSpec[];
  final_norm: NormSpec;
  source: SourceSpec;
  export?: ExportSpec;
  scap?: ScapSpec;
}
