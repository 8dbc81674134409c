/**
 * installHubmoe(transformers): teaches a transformers.js module (≥ 4.3, < 5) to load hubmoe model
 * dirs. It changes no file of transformers.js; it wraps four of its public objects, each change
 * scoped to configs and models that hubmoe wrote (config.json has a `hubmoe` section), so any other
 * model behaves exactly as before:
 *
 * 1. `PretrainedConfig.from_pretrained` (and `AutoConfig.from_pretrained`, which every loader calls):
 *    a hubmoe config comes back rewritten for transformers.js (config.ts: model_type `nemotron_h`,
 *    one layer per hubmoe sub-block), which selects the decoder class and the cache names.
 * 2. `AutoModelForCausalLM.MODEL_CLASS_MAPPINGS`: hubmoe's family names (jamba, mamba, blackmamba,
 *    moe-mamba) map to the same class, for code that asks about a raw model_type.
 * 3. `DynamicCache.prototype.get_seq_length`: transformers.js reads the cached length from a
 *    `past_key_values.*` tensor and throws when there is none, i.e. for every model without an
 *    attention layer (Mamba, BlackMamba, MoE-Mamba) from the second generation step on. The length
 *    of a conv/ssm cache is the attention-mask length of the forward pass that produced it, which
 *    `PreTrainedModel.prototype.forward` (wrapped) records per output tensor.
 * 4. `PreTrainedModel.from_pretrained`: routes `device: 'cuda'` to hubmoe's native backend when it
 *    is registered (backend.ts).
 */
import { HubmoeError } from '../errors.js';
import { routeSessionOptions } from './backend.js';
import type { RoutableOptions } from './backend.js';
import { HOST_MODEL_CLASS, HOST_MODEL_TYPE, isHubmoeConfig, isRewritten, toTransformersJsConfig } from './config.js';
import type { ConfigJson } from './config.js';

/** The parts of a transformers.js module the plugin touches (structural, so the web bundle fits too). */
export interface TransformersLike {
  env?: { version?: string };
  PretrainedConfig: {
    new (json: ConfigJson): ConfigJson;
    from_pretrained(path: string, options?: Record<string, unknown>): Promise<ConfigJson>;
  };
  AutoConfig: { from_pretrained(path: string, options?: Record<string, unknown>): Promise<ConfigJson> };
  PreTrainedModel: {
    from_pretrained(path: string, options?: Record<string, unknown>): Promise<unknown>;
    prototype: { forward(inputs: Record<string, unknown>): Promise<Record<string, unknown>> };
  };
  DynamicCache: { prototype: { get_seq_length(): number } };
  AutoModelForCausalLM: { MODEL_CLASS_MAPPINGS: Array<Map<string, string>> | null };
}

export interface InstallResult {
  /** transformers.js version seen (env.version). */
  version: string | undefined;
  /** Model types aliased to the host class by this install (empty when already present). */
  aliases: string[];
  /** Whether this call installed the patches (false: they were already installed on this module). */
  installed: boolean;
}

/** hubmoe family names (and the model_type their sources use) that get a class alias. */
export const FAMILY_MODEL_TYPES = ['jamba', 'mamba', 'blackmamba', 'moe-mamba', 'moe_mamba'] as const;

const INSTALLED = Symbol.for('hubmoe.transformers.installed');
const SEQ_LENGTH = new WeakMap<object, number>();

type Patchable = { [INSTALLED]?: InstallResult };

function checkVersion(version: string | undefined): void {
  if (!version) return;
  const m = /^(\d+)\.(\d+)/.exec(version);
  if (!m) return;
  const [major, minor] = [Number(m[1]), Number(m[2])];
  if (major < 4 || (major === 4 && minor < 3)) {
    throw new HubmoeError(
      'UNSUPPORTED',
      `hubmoe/transformers needs @huggingface/transformers ≥ 4.3.0 (found ${version}): earlier versions pin onnxruntime 1.24, which lacks the LinearAttention and CausalConvWithState operators hubmoe graphs use. Upgrade with npm install @huggingface/transformers@^4.3`,
    );
  }
}

function requireShape(t: TransformersLike): void {
  const missing: string[] = [];
  if (typeof t.PretrainedConfig?.from_pretrained !== 'function') missing.push('PretrainedConfig.from_pretrained');
  if (typeof t.AutoConfig?.from_pretrained !== 'function') missing.push('AutoConfig.from_pretrained');
  if (typeof t.PreTrainedModel?.from_pretrained !== 'function') missing.push('PreTrainedModel.from_pretrained');
  if (typeof t.PreTrainedModel?.prototype?.forward !== 'function') missing.push('PreTrainedModel.prototype.forward');
  if (typeof t.DynamicCache?.prototype?.get_seq_length !== 'function') missing.push('DynamicCache.prototype.get_seq_length');
  if (!Array.isArray(t.AutoModelForCausalLM?.MODEL_CLASS_MAPPINGS)) missing.push('AutoModelForCausalLM.MODEL_CLASS_MAPPINGS');
  if (missing.length) {
    throw new HubmoeError(
      'UNSUPPORTED',
      `hubmoe/transformers cannot patch this transformers.js (${t.env?.version ?? 'unknown version'}): it has no ${missing.join(', ')}. hubmoe supports @huggingface/transformers >=4.3.0 <5`,
    );
  }
}

/** Installs the patches on a transformers.js module; calling it again on the same module is a no-op. */
export function installHubmoe(t: TransformersLike): InstallResult {
  const marker = t.PretrainedConfig as unknown as Patchable;
  if (marker[INSTALLED]) return { ...marker[INSTALLED], installed: false };
  const version = t.env?.version;
  checkVersion(version);
  requireShape(t);

  // 1. Config rewrite.
  const rewriteResult = <C extends ConfigJson>(ctor: new (json: ConfigJson) => C, config: C): C =>
    isHubmoeConfig(config) && !isRewritten(config) ? new ctor(toTransformersJsConfig(config) as ConfigJson) : config;
  const configFrom = t.PretrainedConfig.from_pretrained;
  t.PretrainedConfig.from_pretrained = async function (this: new (json: ConfigJson) => ConfigJson, path, options) {
    const config = await configFrom.call(this, path, options);
    return rewriteResult(typeof this === 'function' ? this : t.PretrainedConfig, config);
  };
  // AutoConfig delegates to PretrainedConfig in 4.3; wrapping it too keeps the rewrite if it stops doing so.
  const autoFrom = t.AutoConfig.from_pretrained;
  t.AutoConfig.from_pretrained = async function (this: unknown, path, options) {
    const config = await autoFrom.call(this, path, options);
    return rewriteResult(t.PretrainedConfig, config);
  };

  // 2. Model type aliases.
  const mappings = t.AutoModelForCausalLM.MODEL_CLASS_MAPPINGS!;
  const host = mappings.find((m) => m.get(HOST_MODEL_TYPE) === HOST_MODEL_CLASS);
  if (!host) {
    throw new HubmoeError('UNSUPPORTED', `hubmoe/transformers: this transformers.js (${version ?? 'unknown version'}) has no ${HOST_MODEL_TYPE} causal-LM class, which hubmoe models run as. hubmoe supports @huggingface/transformers >=4.3.0 <5`);
  }
  const aliases: string[] = [];
  for (const type of FAMILY_MODEL_TYPES) {
    if (!mappings.some((m) => m.has(type))) {
      host.set(type, HOST_MODEL_CLASS);
      aliases.push(type);
    }
  }

  // 3. Cache length for models without attention.
  const forward = t.PreTrainedModel.prototype.forward;
  t.PreTrainedModel.prototype.forward = async function (this: { config?: unknown }, inputs) {
    const outputs = await forward.call(this, inputs);
    if (isHubmoeConfig(this.config)) {
      const mask = inputs?.attention_mask as { dims?: readonly number[] } | undefined;
      const length = mask?.dims?.[1];
      if (typeof length === 'number') {
        for (const name in outputs) {
          const value = outputs[name];
          if (name.startsWith('present') && value && typeof value === 'object') SEQ_LENGTH.set(value, length);
        }
      }
    }
    return outputs;
  };
  const getSeqLength = t.DynamicCache.prototype.get_seq_length;
  t.DynamicCache.prototype.get_seq_length = function (this: Record<string, unknown>) {
    // A KV cache carries its own length; a cache of conv/ssm states only (no attention layer) gets the
    // length recorded for its tensors, whatever transformers.js would say (4.3 throws).
    let recorded: number | undefined;
    for (const name in this) {
      if (name.startsWith('past_key_values.')) return getSeqLength.call(this);
      const value = this[name];
      recorded ??= value && typeof value === 'object' ? SEQ_LENGTH.get(value) : undefined;
    }
    return recorded ?? getSeqLength.call(this);
  };

  // 4. Device routing.
  const modelFrom = t.PreTrainedModel.from_pretrained;
  t.PreTrainedModel.from_pretrained = async function (this: unknown, path, options = {}) {
    const config = (options.config as ConfigJson | null | undefined) ?? (await t.AutoConfig.from_pretrained(path, options));
    return modelFrom.call(this, path, routeSessionOptions(config, { ...options, config } as RoutableOptions));
  };

  const result: InstallResult = { version, aliases, installed: true };
  marker[INSTALLED] = result;
  return result;
}

