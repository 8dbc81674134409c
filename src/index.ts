/**
 * hubmoe: convert hybrid state-space / mixture-of-experts language models (Jamba, BlackMamba,
 * MoE-Mamba, Mamba) to ONNX and run them with ONNX Runtime.
 *
 *   import { convert, loadModel } from 'hubmoe';
 *   await convert('path/or/org/repo', { outDir: 'out' });
 *   const model = await loadModel('out');
 *   console.log(await model.generateText('Once upon a time'));
 */
export { convert, openSource } from './convert.js';
export type { ConvertOptions, ConvertResult, ConvertPlan, ConvertDType, SourceOptions } from './convert.js';
export { inspect, formatInspect } from './inspect.js';
export type { InspectResult } from './inspect.js';
export { graphChoice, loadModel } from '../runtime/model.js';
export { loadSpec } from './schema/load.js';
export type {
  HubmoeModel,
  LoadOptions,
  Logits,
  ForwardOptions,
  GenerateOptions,
  GenerateResult,
  TextGenerateOptions,
  TokenEvent,
  FinishReason,
  GraphChoice,
} from '../runtime/model.js';
export type { SamplingOptions } from '../runtime/sampling.js';
export { HubmoeError, isHubmoeError } from './errors.js';
export type { HubmoeErrorCode } from './errors.js';
export type { Logger } from './log.js';
export type * from './schema/spec.js';
export { validateSpec } from './schema/validate.js';
export { canonicalTensors, parameterCount } from './schema/tensors.js';
export { VERSION } from './version.js';
