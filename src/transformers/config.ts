/**
 * The config rewrite that lets transformers.js load a hubmoe model dir.
 *
 * transformers.js (4.3) has no Jamba or Mamba classes, but its `nemotron_h` model (a hybrid
 * Mamba-2/attention decoder) runs any decoder-only ONNX graph whose caches follow the names hubmoe
 * exports: `past_conv.{j}` / `past_ssm.{j}` for entries of `layers_block_type` that are "mamba" and
 * `past_key_values.{j}.key|value` for "attention"; "mlp" and "moe" entries carry no cache. Its cache
 * naming keys on `config.model_type`, so a hubmoe config is presented to it as `nemotron_h`, with
 * `num_hidden_layers` counting hubmoe's sub-blocks (a Jamba layer is two). The source's own values
 * are kept under `hubmoe.source_*`. Pure functions only: no transformers.js import, so the rules are
 * testable and usable in any environment.
 */
import { HubmoeError } from '../errors.js';

/** The transformers.js model type whose cache plumbing hubmoe graphs plug into. */
export const HOST_MODEL_TYPE = 'nemotron_h';
/** The transformers.js class that model type maps to (a plain decoder-only PreTrainedModel). */
export const HOST_MODEL_CLASS = 'NemotronHForCausalLM';

export type ConfigJson = Record<string, unknown>;

const BLOCK_KINDS = new Set(['mamba', 'attention', 'mlp', 'moe']);

export interface HubmoeConfigSection {
  schema: string;
  family: string;
  blocks: number;
  /** The source's model_type, before the rewrite (written by the rewrite). */
  source_model_type?: string | null;
  /** The source's num_hidden_layers, before the rewrite (written by the rewrite). */
  source_num_hidden_layers?: number | null;
  /** The source's layer_types, when it had one (written by the rewrite). */
  source_layer_types?: unknown;
}

function isObject(x: unknown): x is Record<string, unknown> {
  return x !== null && typeof x === 'object' && !Array.isArray(x);
}

/** Whether a config (config.json, or a transformers.js PretrainedConfig) is one hubmoe wrote. */
export function isHubmoeConfig(config: unknown): boolean {
  if (!isObject(config)) return false;
  const h = config.hubmoe;
  return isObject(h) && typeof h.schema === 'string' && h.schema.startsWith('hubmoe/') && Array.isArray(config.layers_block_type);
}

/** Whether the rewrite has already been applied (it is idempotent). */
export function isRewritten(config: unknown): boolean {
  return isHubmoeConfig(config) && (config as ConfigJson).model_type === HOST_MODEL_TYPE && 'source_model_type' in ((config as ConfigJson).hubmoe as object);
}

/** The sub-block kinds of a hubmoe config, checked. */
export function blockKinds(config: ConfigJson): string[] {
  const kinds = config.layers_block_type;
  if (!Array.isArray(kinds) || kinds.length === 0) {
    throw new HubmoeError('BAD_CONFIG', 'config.json: hubmoe model dirs list their sub-blocks in "layers_block_type"; it is missing or empty (reconvert with hubmoe convert)');
  }
  kinds.forEach((k, j) => {
    if (typeof k !== 'string' || !BLOCK_KINDS.has(k)) {
      throw new HubmoeError('BAD_CONFIG', `config.json: layers_block_type[${j}] is ${JSON.stringify(k)}; expected one of mamba, attention, mlp, moe`);
    }
  });
  return kinds as string[];
}

/**
 * The config transformers.js should see for a hubmoe model dir; any other config is returned as is.
 * Also picks the fp16 graph for `device: 'cuda'` when the dir has one (hubmoe's CUDA models are
 * fp16: ONNX Runtime's GroupQueryAttention has no fp32 CUDA kernel), unless the config says otherwise.
 */
export function toTransformersJsConfig<T extends ConfigJson>(config: T): T | ConfigJson {
  if (!isHubmoeConfig(config) || isRewritten(config)) return config;
  const kinds = blockKinds(config);
  // normalized_config belongs to transformers.js's PretrainedConfig; it is recomputed from the new model_type.
  const { normalized_config: _normalized, ...rest } = config as ConfigJson;
  const hubmoe = config.hubmoe as unknown as HubmoeConfigSection;
  const tjs = isObject(rest['transformers.js_config']) ? rest['transformers.js_config'] : {};
  const files = isObject(tjs.use_external_data_format) ? Object.keys(tjs.use_external_data_format) : [];
  const deviceConfig: Record<string, unknown> = isObject(tjs.device_config) ? { ...tjs.device_config } : {};
  if (files.includes('model_fp16.onnx') && !('cuda' in deviceConfig)) deviceConfig.cuda = { dtype: 'fp16' };
  return {
    ...rest,
    model_type: HOST_MODEL_TYPE,
    num_hidden_layers: kinds.length,
    layer_types: kinds,
    hubmoe: {
      ...hubmoe,
      source_model_type: typeof config.model_type === 'string' ? config.model_type : null,
      source_num_hidden_layers: typeof config.num_hidden_layers === 'number' ? config.num_hidden_layers : null,
      ...('layer_types' in config ? { source_layer_types: config.layer_types } : {}),
    },
    'transformers.js_config': { ...tjs, ...(Object.keys(deviceConfig).length > 0 ? { device_config: deviceConfig } : {}) },
  };
}

/** The cache outputs of a hubmoe graph (present_conv.j, present_ssm.j, present.j.key|value). */
export function cacheOutputNames(config: ConfigJson): string[] {
  const names: string[] = [];
  blockKinds(config).forEach((kind, j) => {
    if (kind === 'mamba') names.push(`present_conv.${j}`, `present_ssm.${j}`);
    else if (kind === 'attention') names.push(`present.${j}.key`, `present.${j}.value`);
  });
  return names;
}

/** Whether the model has an attention sub-block (a KV cache transformers.js can read a length from). */
export function hasAttention(config: ConfigJson): boolean {
  return blockKinds(config).includes('attention');
}
