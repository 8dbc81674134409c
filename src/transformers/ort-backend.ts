/**
 * The onnxruntime-common backend over hubmoe's native runtime (runtime/native): what transformers.js
 * talks to when a session names the 'hubmoe' execution provider.
 *
 * transformers.js → onnxruntime-common `InferenceSession` → this backend's session handler → a native
 * session. Outputs the caller asked to keep on the device (`preferredOutputLocation: 'gpu-buffer'`,
 * which the plugin sets for a hubmoe model's present_* caches) come back as onnxruntime-common
 * 'gpu-buffer' tensors wrapping the native device values; fed back as past_* on the next step, they
 * are unwrapped and bound as they are. transformers.js's DynamicCache disposes of each cache when the
 * next step replaces it, which frees the device memory. Logits, and anything not asked for, come back
 * as ordinary CPU tensors.
 *
 * The native runtime is described structurally (NativeRuntimeLike), so this module does not load the
 * addon: `registerNativeBackend(loadNative())` (or a stand-in, in tests) does the wiring. Node only:
 * it loads onnxruntime-node for the Tensor class transformers.js's sessions use.
 */
import type { Backend, InferenceSession, InferenceSessionHandler, OnnxValue, SessionHandler, Tensor as OrtTensor } from 'onnxruntime-node';
import { HubmoeError } from '../errors.js';
import { HUBMOE_BACKEND_NAME, registerHubmoeBackend } from './backend.js';
import type { HubmoeBackendInfo } from './backend.js';

/** A value the native runtime left in device memory (runtime/native `DeviceValue`). */
export interface DeviceValueLike {
  readonly type: string;
  readonly dims: readonly number[];
  readonly disposed: boolean;
  download(): { type: string; dims: readonly number[]; data: unknown };
  dispose(): void;
}

/** A host tensor as the native runtime takes and returns it (onnxruntime-common's CPU Tensor fits). */
export interface HostTensorLike {
  readonly type: string;
  readonly dims: readonly number[];
  readonly data: unknown;
}

/** A native session (runtime/native `NativeSession`). */
export interface NativeSessionLike {
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  readonly inputMetadata: readonly unknown[];
  readonly outputMetadata: readonly unknown[];
  run(feeds: Record<string, HostTensorLike | DeviceValueLike>, options: { deviceOutputs?: readonly string[]; outputs?: readonly string[] }): Promise<Record<string, HostTensorLike | DeviceValueLike>>;
  release(): Promise<void> | void;
}

/** The native runtime (runtime/native `NativeBinding`). */
export interface NativeRuntimeLike {
  createSession(
    modelPath: string,
    options: {
      device: 'cpu' | 'cuda';
      deviceId?: number;
      threads?: number;
      graphOptimizationLevel?: 'disabled' | 'basic' | 'extended' | 'all';
      freeDimensionOverrides?: Record<string, number>;
      logSeverity?: number;
      customOpsLibrary?: string;
      cudaOptions?: Record<string, string | number | boolean>;
    },
  ): Promise<NativeSessionLike>;
  isDeviceValue(value: unknown): boolean;
}

/** Options of the 'hubmoe' entry in executionProviders: `{ name: 'hubmoe', device: 'cuda', deviceId: 0 }`. */
export interface HubmoeProviderOptions {
  name: typeof HUBMOE_BACKEND_NAME;
  /** Where the session runs (default 'cuda'). */
  device?: 'cpu' | 'cuda';
  deviceId?: number;
  /** Absolute path of a custom-op library (hubmoe's fused ops). */
  customOpsLibrary?: string;
  /** CUDA execution provider options, by ONNX Runtime's names (gpu_mem_limit, enable_cuda_graph, …). */
  cudaOptions?: Record<string, string | number | boolean>;
}

/** Element types onnxruntime-common accepts for 'gpu-buffer' tensors. */
const DEVICE_TYPES = new Set(['float32', 'float16', 'int32', 'int64', 'uint32', 'uint8', 'bool', 'uint4', 'int4']);

type TensorCtor = typeof OrtTensor;

function providerOptions(options: InferenceSession.SessionOptions | undefined): HubmoeProviderOptions {
  const entry = (options?.executionProviders ?? []).find((ep) => (typeof ep === 'string' ? ep : ep.name) === HUBMOE_BACKEND_NAME);
  return entry && typeof entry === 'object' ? (entry as unknown as HubmoeProviderOptions) : { name: HUBMOE_BACKEND_NAME };
}

function deviceOutputNames(options: InferenceSession.SessionOptions | undefined, outputNames: readonly string[]): string[] {
  const where = options?.preferredOutputLocation;
  if (where === undefined) return [];
  if (typeof where === 'string') return where === 'gpu-buffer' ? [...outputNames] : [];
  return outputNames.filter((n) => (where as Record<string, string>)[n] === 'gpu-buffer');
}

const LEVELS = new Set(['disabled', 'basic', 'extended', 'all']);

/** An onnxruntime-common Backend running sessions on the native runtime. */
export async function createHubmoeOrtBackend(runtime: NativeRuntimeLike): Promise<Backend> {
  const ort = (await import('onnxruntime-node')) as unknown as { default?: { Tensor: TensorCtor }; Tensor: TensorCtor };
  const Tensor: TensorCtor = ort.Tensor ?? ort.default!.Tensor;

  const toOrt = (name: string, value: HostTensorLike | DeviceValueLike, onDevice: boolean): OnnxValue => {
    if (runtime.isDeviceValue(value)) {
      const dv = value as DeviceValueLike;
      if (onDevice && DEVICE_TYPES.has(dv.type)) {
        return Tensor.fromGpuBuffer(dv as never, {
          dataType: dv.type as 'float32',
          dims: dv.dims,
          download: async () => dv.download().data as Float32Array,
          dispose: () => dv.dispose(),
        });
      }
      const host = dv.download();
      dv.dispose();
      return new Tensor(host.type as 'float32', host.data as Float32Array, host.dims);
    }
    const h = value as HostTensorLike;
    if (!h || typeof h.type !== 'string') throw new HubmoeError('RUNTIME', `the hubmoe backend returned no tensor for ${name}`);
    return h instanceof Tensor ? h : new Tensor(h.type as 'float32', h.data as Float32Array, h.dims);
  };

  return {
    async init(): Promise<void> {},
    async createInferenceSessionHandler(uriOrBuffer: string | Uint8Array, options?: InferenceSession.SessionOptions): Promise<InferenceSessionHandler> {
      if (typeof uriOrBuffer !== 'string') {
        throw new HubmoeError('BAD_ARGUMENT', "the hubmoe backend opens model files by path; load the model from a local directory (the Hub cache's snapshot dir works) rather than from bytes");
      }
      const ep = providerOptions(options);
      const level = options?.graphOptimizationLevel;
      const session = await runtime.createSession(uriOrBuffer, {
        device: ep.device ?? 'cuda',
        ...(ep.deviceId !== undefined ? { deviceId: ep.deviceId } : {}),
        ...(ep.customOpsLibrary ? { customOpsLibrary: ep.customOpsLibrary } : {}),
        ...(ep.cudaOptions ? { cudaOptions: ep.cudaOptions } : {}),
        ...(options?.intraOpNumThreads ? { threads: options.intraOpNumThreads } : {}),
        ...(level && LEVELS.has(level) ? { graphOptimizationLevel: level as 'disabled' | 'basic' | 'extended' | 'all' } : {}),
        ...(options?.freeDimensionOverrides ? { freeDimensionOverrides: options.freeDimensionOverrides } : {}),
        ...(options?.logSeverityLevel !== undefined ? { logSeverity: options.logSeverityLevel } : {}),
      });
      const onDevice = new Set(deviceOutputNames(options, session.outputNames));
      return {
        inputNames: session.inputNames,
        outputNames: session.outputNames,
        inputMetadata: session.inputMetadata as InferenceSession.ValueMetadata[],
        outputMetadata: session.outputMetadata as InferenceSession.ValueMetadata[],
        startProfiling() {},
        endProfiling() {},
        dispose: async () => {
          await session.release();
        },
        async run(feeds: SessionHandler.FeedsType, fetches: SessionHandler.FetchesType): Promise<SessionHandler.ReturnType> {
          const nativeFeeds: Record<string, HostTensorLike | DeviceValueLike> = {};
          for (const [name, value] of Object.entries(feeds)) {
            const t = value as OrtTensor;
            if (t.location === 'gpu-buffer') {
              const dv = t.gpuBuffer as unknown;
              if (!runtime.isDeviceValue(dv)) {
                throw new HubmoeError('BAD_ARGUMENT', `feed ${name} is a device tensor that does not come from the hubmoe backend; feed hubmoe sessions host tensors or their own outputs`);
              }
              nativeFeeds[name] = dv as DeviceValueLike;
            } else if (t.location === 'cpu' || t.location === 'cpu-pinned' || t.location === undefined) {
              nativeFeeds[name] = t as unknown as HostTensorLike;
            } else {
              throw new HubmoeError('BAD_ARGUMENT', `feed ${name} is in ${t.location} memory, which the hubmoe backend cannot read`);
            }
          }
          const outputs = Object.keys(fetches);
          const deviceOutputs = outputs.filter((n) => onDevice.has(n));
          const out = await session.run(nativeFeeds, { outputs, ...(deviceOutputs.length ? { deviceOutputs } : {}) });
          const result: Record<string, OnnxValue> = {};
          for (const [name, value] of Object.entries(out)) result[name] = toOrt(name, value, onDevice.has(name));
          return result;
        },
      };
    },
  };
}

/**
 * Registers hubmoe's native runtime as the 'hubmoe' backend, with device-resident caches: after this,
 * `pipeline(..., { device: 'cuda' })` on a hubmoe model runs on it.
 */
export async function registerNativeBackend(runtime: NativeRuntimeLike, info: Partial<Omit<HubmoeBackendInfo, 'name'>> = {}): Promise<HubmoeBackendInfo> {
  return registerHubmoeBackend(await createHubmoeOrtBackend(runtime), { deviceCaches: true, devices: ['cuda'], ...info });
}
