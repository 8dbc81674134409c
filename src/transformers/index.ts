/**
 * hubmoe/transformers: the transformers.js plugin. Importing it makes @huggingface/transformers
 * (>= 4.3, < 5) load hubmoe model dirs — Jamba, BlackMamba, MoE-Mamba and Mamba — with the APIs
 * transformers.js users know:
 *
 *   import 'hubmoe/transformers';
 *   import { pipeline } from '@huggingface/transformers';
 *   const generator = await pipeline('text-generation', './jamba-onnx', { dtype: 'fp32' });
 *   console.log(await generator('Once upon a time', { max_new_tokens: 20 }));
 *
 * It works in Node (onnxruntime-node: CPU, CUDA, and hubmoe's native backend when registered) and in
 * browsers (onnxruntime-web: WASM, WebGPU). Importing it before or after transformers.js is the same:
 * it patches the module objects, never transformers.js's files. See docs/transformers-js.md.
 */
import * as transformers from '@huggingface/transformers';
import type { HubmoeBackendInfo } from './backend.js';
import { installHubmoe } from './install.js';
import { registerNativeBackend } from './ort-backend.js';
import type { InstallResult, TransformersLike } from './install.js';

/** What importing this module installed on @huggingface/transformers. */
export const installation: InstallResult = installHubmoe(transformers as unknown as TransformersLike);

/**
 * In Node, hubmoe's native backend is registered as the onnxruntime-common backend 'hubmoe' when it
 * is built (`npm run build:native`), so `device: 'cuda'` runs through it with the caches kept on the
 * GPU. Set HUBMOE_NATIVE=0 to leave transformers.js on its own CUDA path. Browsers skip this.
 */
export const nativeBackend: HubmoeBackendInfo | undefined = await registerBuiltNativeBackend();

async function registerBuiltNativeBackend(): Promise<HubmoeBackendInfo | undefined> {
  const node = typeof process !== 'undefined' && Boolean(process.versions?.node);
  if (!node || process.env.HUBMOE_NATIVE === '0') return undefined;
  const { loadNative } = await import('../../runtime/native/index.js');
  const binding = loadNative();
  return binding ? registerNativeBackend(binding) : undefined;
}

export { installHubmoe, FAMILY_MODEL_TYPES } from './install.js';
export type { InstallResult, TransformersLike } from './install.js';
export { HOST_MODEL_CLASS, HOST_MODEL_TYPE, cacheOutputNames, hasAttention, isHubmoeConfig, toTransformersJsConfig } from './config.js';
export type { ConfigJson, HubmoeConfigSection } from './config.js';
export { HUBMOE_BACKEND_NAME, hubmoeBackend, markHubmoeBackend, registerHubmoeBackend, routeSessionOptions, unmarkHubmoeBackend } from './backend.js';
export type { HubmoeBackendInfo, RoutableOptions } from './backend.js';
export { createHubmoeOrtBackend, registerNativeBackend } from './ort-backend.js';
export type { DeviceValueLike, HostTensorLike, HubmoeProviderOptions, NativeRuntimeLike, NativeSessionLike } from './ort-backend.js';
