/**
 * Inference backends: a session over one ONNX model file.
 *
 * - `onnxruntime-node`: stock onnxruntime-node on the CPU, or on CUDA when its CUDA execution
 *   provider libraries are installed. Every output comes back to host memory.
 * - `native`: hubmoe's N-API addon (runtime/native) over the same ONNX Runtime library: custom-op
 *   library registered (the `fused` target), full CUDA provider options, and the decode caches kept
 *   in device memory between steps (IO binding).
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import ort from 'onnxruntime-node';
import { HubmoeError } from '../src/errors.js';
import { PACKAGE_ROOT } from '../src/version.js';
import { createNativeSession, loadNative, nativeStatus } from './native/index.js';
import type { DeviceValue, NativeFeed, NativeGreedyArgs, NativeGreedyTiming, NativeRunTiming, NativeSession } from './native/index.js';

export type Device = 'cpu' | 'cuda';
export type BackendName = 'onnxruntime-node' | 'native';
export type Tensor = ort.Tensor;
export const Tensor = ort.Tensor;

/** A tensor in host memory (an onnxruntime-common Tensor, or the native backend's host tensor). */
export interface HostValue {
  readonly type: string;
  readonly dims: readonly number[];
  readonly data: unknown;
}

/** A feed or output: host memory, or (native backend) a value left on the device. */
export type Value = HostValue | DeviceValue;

/** A native-backend device value (onnxruntime-common Tensors have `dispose` and `location` too, but no `deviceId`). */
export function isDeviceValue(v: Value): v is DeviceValue {
  return 'deviceId' in v && typeof (v as DeviceValue).download === 'function';
}

export interface InferenceBackend {
  readonly name: BackendName;
  readonly device: Device;
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  /** Declared shape of an input: numbers, or names of symbolic dims. */
  inputShape(name: string): Array<number | string>;
  inputType(name: string): string;
  /** Runs the model; outputs named in `deviceOutputs` may stay on the device (native backend). */
  run(feeds: Record<string, Value>, deviceOutputs?: readonly string[]): Promise<Record<string, Value>>;
  /**
   * Native backend only: a zero-filled value in the session's memory (device memory on CUDA), to
   * feed, write into and bind outputs to.
   */
  allocate?(type: 'float32' | 'float16' | 'int64', dims: readonly number[]): DeviceValue;
  /**
   * Native backend only: a run that writes the outputs in `bind` into those values, returns `outputs`
   * (host memory), and, on a session with CUDA graphs, is captured as / replayed from graph `graphId`.
   */
  runBound?(
    feeds: Record<string, Value>,
    bind: Record<string, DeviceValue>,
    outputs: readonly string[],
    graphId?: number,
    deviceOutputs?: readonly string[],
  ): Promise<Record<string, Value>>;
  /** Native backend only: greedy decode steps of the static-cache graph in one call (see NativeGreedyArgs). */
  greedySteps?(args: NativeGreedyArgs): Promise<BigInt64Array>;
  /** The session captures CUDA graphs (native backend on CUDA, `enable_cuda_graph`). */
  readonly cudaGraph?: boolean;
  release(): Promise<void>;
}

export interface SessionOptions {
  device: Device;
  /** Which backend (default: native when it is built and the device is CUDA or the model needs it). */
  backend?: BackendName;
  /** The model uses hubmoe's custom operators (the fused target). */
  customOps?: boolean;
  /** Threads for the CPU provider (default: ONNX Runtime's choice). */
  threads?: number;
  /** CUDA provider options for the native backend. */
  cudaOptions?: Record<string, string | number | boolean>;
  /** Native backend: write ONNX Runtime's profile (a JSON trace) with this file name prefix; ended on release. */
  profileFile?: string;
  /** Native backend on CUDA: let the session capture and replay CUDA graphs (`enable_cuda_graph`). */
  cudaGraph?: boolean;
}

/** hubmoe's custom-op library for a device, where `npm run build:native` puts it. */
export function customOpsLibrary(device: Device): string {
  return join(PACKAGE_ROOT, 'runtime', 'native', 'build', device === 'cuda' ? 'libhubmoe_ops_cuda.so' : 'libhubmoe_ops.so');
}

/** Input metadata as both onnxruntime-common and the native backend describe it. */
type InputMetadata = { readonly name: string } & ({ readonly isTensor: true; readonly type: string; readonly shape: ReadonlyArray<number | string> } | { readonly isTensor: false });

/** What both backends share: names and input metadata from the session. */
abstract class SessionBackend<S extends { readonly inputNames: readonly string[]; readonly outputNames: readonly string[]; readonly inputMetadata: readonly InputMetadata[] }> {
  constructor(protected readonly session: S) {}

  get inputNames(): readonly string[] {
    return this.session.inputNames;
  }

  get outputNames(): readonly string[] {
    return this.session.outputNames;
  }

  private meta(name: string): InputMetadata {
    const m = this.session.inputMetadata.find((x) => x.name === name);
    if (!m) throw new HubmoeError('RUNTIME', `the model has no input ${name}`);
    return m;
  }

  inputShape(name: string): Array<number | string> {
    const m = this.meta(name);
    return m.isTensor ? [...m.shape] : [];
  }

  inputType(name: string): string {
    const m = this.meta(name);
    return m.isTensor ? m.type : 'unknown';
  }
}

class OrtBackend extends SessionBackend<ort.InferenceSession> implements InferenceBackend {
  readonly name = 'onnxruntime-node' as const;

  constructor(
    readonly device: Device,
    session: ort.InferenceSession,
  ) {
    super(session);
  }

  async run(feeds: Record<string, Value>): Promise<Record<string, Value>> {
    try {
      return (await this.session.run(feeds as Record<string, ort.Tensor>)) as Record<string, ort.Tensor>;
    } catch (err) {
      throw new HubmoeError('RUNTIME', `ONNX Runtime failed: ${(err as Error).message}`, { cause: err });
    }
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}

class NativeBackend extends SessionBackend<NativeSession> implements InferenceBackend {
  readonly name = 'native' as const;
  /** The profile file written on release, when profiling. */
  profile: string | undefined;

  constructor(
    readonly device: Device,
    session: NativeSession,
    private readonly profiling = false,
    readonly cudaGraph = false,
  ) {
    super(session);
  }

  async run(feeds: Record<string, Value>, deviceOutputs: readonly string[] = []): Promise<Record<string, Value>> {
    return this.session.run(feeds as Record<string, NativeFeed>, { deviceOutputs });
  }

  allocate(type: 'float32' | 'float16' | 'int64', dims: readonly number[]): DeviceValue {
    return this.session.allocate(type, dims);
  }

  /** Where the last successful run's wall time went (bench/step-breakdown.mjs). */
  get lastRunTiming(): NativeRunTiming | undefined {
    return this.session.lastRunTiming;
  }

  /** Where the last successful greedy call's wall time went (bench/step-breakdown.mjs). */
  get lastGreedyTiming(): NativeGreedyTiming | undefined {
    return this.session.lastGreedyTiming;
  }

  async runBound(
    feeds: Record<string, Value>,
    bind: Record<string, DeviceValue>,
    outputs: readonly string[],
    graphId?: number,
    deviceOutputs: readonly string[] = [],
  ): Promise<Record<string, Value>> {
    return this.session.run(feeds as Record<string, NativeFeed>, { bind, outputs, deviceOutputs, ...(graphId !== undefined ? { graphId } : {}) });
  }

  async greedySteps(args: NativeGreedyArgs): Promise<BigInt64Array> {
    return this.session.greedy(args);
  }

  async release(): Promise<void> {
    if (this.profiling && !this.session.released) this.profile = this.session.endProfiling();
    await this.session.release();
  }
}

async function createOrt(modelPath: string, opts: SessionOptions): Promise<InferenceBackend> {
  try {
    const session = await ort.InferenceSession.create(modelPath, {
      executionProviders: [opts.device === 'cuda' ? 'cuda' : 'cpu'],
      graphOptimizationLevel: 'all',
      ...(opts.threads ? { intraOpNumThreads: opts.threads } : {}),
    });
    return new OrtBackend(opts.device, session);
  } catch (err) {
    const msg = (err as Error).message ?? String(err);
    if (opts.device === 'cuda') {
      throw new HubmoeError(
        'RUNTIME',
        `could not start ONNX Runtime's CUDA execution provider for ${modelPath}: ${msg}. The CUDA provider libraries (libonnxruntime_providers_cuda.so) must sit next to onnxruntime-node's libonnxruntime.so.1; see docs/cuda.md, or run \`hubmoe doctor\``,
        { cause: err },
      );
    }
    throw new HubmoeError('RUNTIME', `ONNX Runtime could not load ${modelPath}: ${msg}`, { cause: err });
  }
}

/** Picks the backend: native when asked, when the model needs custom ops, or for CUDA when it is built. */
export function chooseBackend(opts: SessionOptions): BackendName {
  if (opts.backend) return opts.backend;
  if (opts.customOps) return 'native';
  if (opts.device === 'cuda' && loadNative()) return 'native';
  return 'onnxruntime-node';
}

export async function createBackend(modelPath: string, opts: SessionOptions): Promise<InferenceBackend> {
  const name = chooseBackend(opts);
  if (name === 'onnxruntime-node') {
    if (opts.customOps) {
      throw new HubmoeError('BAD_ARGUMENT', `${modelPath} uses hubmoe's custom operators (the fused target), which onnxruntime-node cannot load; use the native backend`);
    }
    return createOrt(modelPath, opts);
  }
  if (!loadNative()) {
    throw new HubmoeError(
      'NATIVE',
      `hubmoe's native backend is not available (${nativeStatus().reason ?? 'not built'})${opts.customOps ? `; ${modelPath} uses hubmoe's custom operators (the fused target) and needs it` : ''}. Build it with \`npm run build:native\`; \`hubmoe doctor\` shows what is missing`,
    );
  }
  let library: string | undefined;
  if (opts.customOps) {
    library = customOpsLibrary(opts.device);
    if (!existsSync(library)) {
      throw new HubmoeError('NATIVE', `hubmoe's custom-op library ${library} is missing; build it with \`npm run build:native\`${opts.device === 'cuda' ? ' on a machine with nvcc (CUDA 13)' : ''}`);
    }
  }
  const graph = opts.cudaGraph === true && opts.device === 'cuda';
  const session = await createNativeSession(modelPath, {
    device: opts.device,
    threads: opts.threads,
    customOpsLibrary: library,
    cudaOptions: graph ? { ...opts.cudaOptions, enable_cuda_graph: true } : opts.cudaOptions,
    // Errors only: ONNX Runtime warns on every run when a symbolic output dim is bound to a size.
    logSeverity: 3,
    ...(opts.profileFile ? { profileFile: opts.profileFile } : {}),
  });
  return new NativeBackend(opts.device, session, Boolean(opts.profileFile), graph);
}
