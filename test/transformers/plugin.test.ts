/** The plugin's rules in isolation: the config rewrite, session routing, and what install patches. */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  HOST_MODEL_TYPE,
  cacheOutputNames,
  installHubmoe,
  isHubmoeConfig,
  routeSessionOptions,
  toTransformersJsConfig,
} from '../../src/transformers/index.js';
import type { HubmoeBackendInfo, TransformersLike } from '../../src/transformers/index.js';
import * as transformers from '@huggingface/transformers';
import { AutoConfig, DynamicCache, Tensor } from '@huggingface/transformers';
import { HubmoeError } from '../../src/errors.js';
import { tempDir } from '../helpers.js';

const jambaConfig = {
  model_type: 'jamba',
  num_hidden_layers: 2,
  num_key_value_heads: 2,
  layers_block_type: ['mamba', 'mlp', 'attention', 'moe'],
  hubmoe: { schema: 'hubmoe/1', family: 'jamba', blocks: 4 },
  'transformers.js_config': { dtype: 'fp32', use_external_data_format: { 'model.onnx': 1 } },
};

const backend: HubmoeBackendInfo = { name: 'hubmoe', devices: ['cuda'], deviceCaches: true };

describe('toTransformersJsConfig', () => {
  it('presents a hubmoe config as nemotron_h with one layer per sub-block, keeping the source values', () => {
    const c = toTransformersJsConfig(jambaConfig);
    expect(c).toMatchObject({
      model_type: HOST_MODEL_TYPE,
      num_hidden_layers: 4,
      layer_types: ['mamba', 'mlp', 'attention', 'moe'],
      layers_block_type: ['mamba', 'mlp', 'attention', 'moe'],
      hubmoe: { schema: 'hubmoe/1', family: 'jamba', blocks: 4, source_model_type: 'jamba', source_num_hidden_layers: 2 },
      'transformers.js_config': { dtype: 'fp32', use_external_data_format: { 'model.onnx': 1 } },
    });
    expect(c['transformers.js_config']).not.toHaveProperty('device_config');
  });

  it('is idempotent and leaves other configs alone', () => {
    const once = toTransformersJsConfig(jambaConfig);
    expect(toTransformersJsConfig(once)).toBe(once);
    const llama = { model_type: 'llama', num_hidden_layers: 2 };
    expect(toTransformersJsConfig(llama)).toBe(llama);
    expect(isHubmoeConfig(llama)).toBe(false);
    expect(isHubmoeConfig({ ...llama, hubmoe: { schema: 'other' }, layers_block_type: [] })).toBe(false);
  });

  it('sends device "cuda" to the fp16 graph when the dir has one', () => {
    const both = { ...jambaConfig, 'transformers.js_config': { dtype: 'fp32', use_external_data_format: { 'model.onnx': 1, 'model_fp16.onnx': 1 } } };
    expect(toTransformersJsConfig(both)['transformers.js_config']).toMatchObject({ dtype: 'fp32', device_config: { cuda: { dtype: 'fp16' } } });
    const chosen = { ...both, 'transformers.js_config': { ...both['transformers.js_config'], device_config: { cuda: { dtype: 'fp32' } } } };
    expect(toTransformersJsConfig(chosen)['transformers.js_config']).toMatchObject({ device_config: { cuda: { dtype: 'fp32' } } });
  });

  it('refuses an unknown sub-block kind by index', () => {
    const bad = { ...jambaConfig, layers_block_type: ['mamba', 'conv'] };
    expect(() => toTransformersJsConfig(bad)).toThrow(HubmoeError);
    expect(() => toTransformersJsConfig(bad)).toThrow(/layers_block_type\[1\] is "conv"/);
  });

  it('names the cache outputs of mamba and attention sub-blocks only', () => {
    expect(cacheOutputNames(jambaConfig)).toEqual(['present_conv.0', 'present_ssm.0', 'present.2.key', 'present.2.value']);
  });
});

describe('routeSessionOptions', () => {
  it("routes device 'cuda' to the hubmoe backend with device-resident caches", () => {
    const out = routeSessionOptions(jambaConfig, { device: 'cuda', session_options: {} }, backend);
    expect(out.session_options).toEqual({
      executionProviders: ['hubmoe'],
      preferredOutputLocation: { 'present_conv.0': 'gpu-buffer', 'present_ssm.0': 'gpu-buffer', 'present.2.key': 'gpu-buffer', 'present.2.value': 'gpu-buffer' },
    });
    // Per-session device maps and the config's default device count too.
    expect(routeSessionOptions(jambaConfig, { device: { model: 'cuda' } }, backend).session_options?.executionProviders).toEqual(['hubmoe']);
    const cudaByDefault = { ...jambaConfig, 'transformers.js_config': { ...jambaConfig['transformers.js_config'], device: 'cuda' } };
    expect(routeSessionOptions(cudaByDefault, {}, backend).session_options?.executionProviders).toEqual(['hubmoe']);
  });

  it('changes nothing without a backend, for other devices, other models, or providers the caller chose', () => {
    const opts = { device: 'cuda', session_options: {} };
    expect(routeSessionOptions(jambaConfig, opts, undefined)).toBe(opts);
    const cpu = { device: 'cpu' };
    expect(routeSessionOptions(jambaConfig, cpu, backend)).toBe(cpu);
    expect(routeSessionOptions({ model_type: 'llama' }, opts, backend)).toBe(opts);
    const chosen = { device: 'cuda', session_options: { executionProviders: ['cuda'] } };
    expect(routeSessionOptions(jambaConfig, chosen, backend)).toBe(chosen);
  });

  it('keeps a caller-chosen hubmoe provider and output locations; no device buffers when the backend has none', () => {
    const explicit = routeSessionOptions(jambaConfig, { session_options: { executionProviders: [{ name: 'hubmoe', deviceId: 1 }], preferredOutputLocation: 'cpu' } }, backend);
    expect(explicit.session_options).toEqual({ executionProviders: [{ name: 'hubmoe', deviceId: 1 }], preferredOutputLocation: 'cpu' });
    const hostOnly = routeSessionOptions(jambaConfig, { device: 'cuda' }, { ...backend, deviceCaches: false });
    expect(hostOnly.session_options).toEqual({ executionProviders: ['hubmoe'] });
  });
});

describe('installHubmoe', () => {
  it('is installed once per transformers.js module', () => {
    const again = installHubmoe(transformers as unknown as TransformersLike);
    expect(again.installed).toBe(false);
  });

  it('refuses transformers.js < 4.3 and modules missing what it patches, by name', () => {
    const fake = (version: string): TransformersLike =>
      ({ env: { version }, PretrainedConfig: class {}, AutoConfig: {}, PreTrainedModel: class {}, DynamicCache: class {}, AutoModelForCausalLM: {} }) as unknown as TransformersLike;
    expect(() => installHubmoe(fake('4.2.0'))).toThrow(/needs @huggingface\/transformers ≥ 4\.3\.0 \(found 4\.2\.0\)/);
    expect(() => installHubmoe(fake('4.3.9'))).toThrow(/it has no PretrainedConfig\.from_pretrained, AutoConfig\.from_pretrained, PreTrainedModel\.from_pretrained/);
  });

  it('leaves non-hubmoe configs as transformers.js reads them', async () => {
    const dir = join(await tempDir('hubmoe-tjs-plain-'), 'llama');
    await mkdir(dir);
    await writeFile(join(dir, 'config.json'), JSON.stringify({ model_type: 'llama', num_hidden_layers: 2, num_key_value_heads: 2, hidden_size: 8, num_attention_heads: 2 }));
    const config = (await AutoConfig.from_pretrained(dir)) as unknown as Record<string, unknown>;
    expect(config.model_type).toBe('llama');
    expect(config.num_hidden_layers).toBe(2);
  });

  it("a cache transformers.js can't measure still fails the way it did (only hubmoe outputs are measured)", () => {
    const conv = new Tensor('float32', new Float32Array(6), [1, 2, 3]);
    const cache = new DynamicCache({ 'past_conv.0': conv });
    expect(() => cache.get_seq_length()).toThrow('Unable to determine sequence length from the cache.');
    const kv = new DynamicCache({ 'past_key_values.0.key': new Tensor('float32', new Float32Array(10), [1, 1, 5, 2]) });
    expect(kv.get_seq_length()).toBe(5);
  });
});
