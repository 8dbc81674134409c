/**
 * hubmoe's native backend: a typed wrapper over the N-API addon in runtime/native/addon, which drives
 * the ONNX Runtime C/C++ API directly. Over onnxruntime-node it adds custom-op libraries
 * (`customOpsLibrary`), every CUDA provider option (`cudaOptions`), free-dimension overrides,
 * profiling, and IO binding: outputs named in `deviceOutputs` stay in device memory as
 * {@link DeviceValue}s and are fed back to the next run without a copy (the decode caches).
 *
 * ONNX Runtime is not linked into the addon. {@link loadNative} loads onnxruntime-node first and hands
 * the addon onnxruntime-node's own `libonnxruntime.so.1`, so one copy of ONNX Runtime (one env, one set
 * of allocators, one CUDA provider) serves both. The CUDA provider libraries are found next to it.
 *
 * Names, element types and dims follow onnxruntime-common (`'float32'`, `'int64'`, …; symbolic dims as
 * strings), so an onnxruntime-common backend can sit on top of this module.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { HubmoeError } from '../../src/errors.js';
import { PACKAGE_ROOT } from '../../src/version.js';

/** Element types, by onnxruntime-common's names. */
export type TensorElementType =
  | 'float32'
  | 'float16'
  | 'bfloat16'
  | 'float64'
  | 'int8'
  | 'uint8'
  | 'int16'
  | 'uint16'
  | 'int32'
  | 'uint32'
  | 'int64'
  | 'uint64'
  | 'bool';

/** The TypedArray that carries each element type (float16 and bfloat16 as raw bits, bool as bytes). */
export interface TensorDataTypes {
  float32: Float32Array;
  float16: Uint16Array;
  bfloat16: Uint16Array;
  float64: Float64Array;
  int8: Int8Array;
  uint8: Uint8Array;
  int16: Int16Array;
  uint16: Uint16Array;
  int32: Int32Array;
  uint32: Uint32Array;
  int64: BigInt64Array;
  uint64: BigUint64Array;
  bool: Uint8Array;
}
export type TensorData = TensorDataTypes[TensorElementType];

/**
 * A tensor in host memory. Structurally compatible with onnxruntime-common's CPU `Tensor`, which can
 * be passed as a feed as it is. A feed's memory is read by a worker thread during the run: do not
 * change it until the run's promise settles.
 */
export interface HostTensor {
  readonly type: TensorElementType;
  readonly dims: readonly number[];
  readonly data: TensorData;
}

/**
 * An ONNX Runtime value that a run left where the session computed it: CUDA memory on a CUDA session,
 * CPU memory on a CPU session. Feed it to a later run (of any session on the same device) and it is
 * bound as it is, without a copy. It keeps its session's resources alive until disposed (or garbage
 * collected): dispose of caches you no longer need. A run in flight keeps the values it was fed alive
 * even if they are disposed meanwhile.
 */
export interface DeviceValue {
  readonly type: TensorElementType;
  readonly dims: readonly number[];
  readonly location: 'cuda' | 'cpu';
  readonly deviceId: number;
  readonly disposed: boolean;
  /** Copies the value to a host tensor (for tests and debugging). */
  download(): HostTensor;
  /** Frees the value now; harmless when already disposed. Feeding a disposed value is an error. */
  dispose(): void;
  /**
   * Copies `data` (a TypedArray of the value's element size) into the value, synchronously: rows of
   * `width` elements (default: all of data), row r at element `offset + r·pitch` (default pitch =
   * width). No run may be using the value meanwhile.
   */
  write(data: TensorData, offset?: number, width?: number, pitch?: number): void;
  /** Sets every element to zero, synchronously. */
  zero(): void;
  /**
   * Copies part of the value to a host tensor [rows, width]: row r is the `width` elements from element
   * `offset + r·pitch` (defaults: offset 0, width the rest of the value, pitch = width, rows 1). E.g. the last
   * position's logits of each row of [B, T, V]: read((T − 1)·V, V, T·V, B).
   */
  read(offset?: number, width?: number, pitch?: number, rows?: number): HostTensor;
}

export type NativeFeed = HostTensor | DeviceValue;
export type NativeOutput = HostTensor | DeviceValue;
export type NativeOutputs = Record<string, NativeOutput>;

/** Input or output metadata, as onnxruntime-common's `InferenceSession.ValueMetadata`. */
export type NativeValueMetadata =
  | { readonly name: string; readonly isTensor: true; readonly type: TensorElementType | 'string' | 'unknown'; readonly shape: ReadonlyArray<number | string> }
  | { readonly name: string; readonly isTensor: false };

export type GraphOptimizationLevel = 'disabled' | 'basic' | 'extended' | 'all';

export interface NativeSessionOptions {
  device: 'cpu' | 'cuda';
  /** CUDA device ordinal (default 0). */
  deviceId?: number;
  /** Intra-op threads (default: ONNX Runtime's choice). */
  threads?: number;
  /** Absolute path of a shared library exporting `RegisterCustomOps` (hubmoe's custom-op library). */
  customOpsLibrary?: string;
  /**
   * CUDA execution provider options, as ONNX Runtime names them (`UpdateCUDAProviderOptions`):
   * `gpu_mem_limit`, `arena_extend_strategy`, `cudnn_conv_algo_search`, `do_copy_in_default_stream`,
   * `enable_cuda_graph`, `use_tf32`, … Booleans become "1"/"0". `device_id` comes from `deviceId`.
   */
  cudaOptions?: Record<string, string | number | boolean>;
  /** Default 'all'. */
  graphOptimizationLevel?: GraphOptimizationLevel;
  /** Fixes symbolic dims by name (`AddFreeDimensionOverrideByName`), e.g. `{ batch_size: 1 }`. */
  freeDimensionOverrides?: Record<string, number>;
  /** Session log severity: 0 verbose, 1 info, 2 warning, 3 error, 4 fatal. */
  logSeverity?: number;
  /** Enables ONNX Runtime's profiler; the value is the file name prefix. See {@link NativeSession.endProfiling}. */
  profileFile?: string;
  /** Session configuration entries (`AddConfigEntry`), e.g. `{ 'session.disable_cpu_ep_fallback': '1' }`. */
  config?: Record<string, string>;
}

export interface NativeRunOptions {
  /** Outputs to leave on the session's device as {@link DeviceValue}s; the others come back as host tensors. */
  deviceOutputs?: readonly string[];
  /** Only these outputs (default: all; `deviceOutputs` are always included). */
  outputs?: readonly string[];
  /**
   * Outputs written into values the caller holds ({@link NativeSession.allocate}, or an earlier
   * run's device outputs) instead of new ones; they are left out of the result.
   */
  bind?: Record<string, DeviceValue>;
  /**
   * Sessions created with `cudaOptions.enable_cuda_graph`: the CUDA graph this run is captured as
   * (its first runs) and replayed from (later ones), a positive integer; -1 (the default) runs without
   * one. A graph run takes device values only, at the addresses it was captured with, and binds every
   * output it returns.
   */
  graphId?: number;
}

export interface NativeVersion {
  /** ONNX Runtime's version string (the runtime's, e.g. 1.30.0). */
  ort: string;
  /** The ORT API level the addon uses (its headers': 21). */
  api: number;
  /** The libonnxruntime the addon loaded. */
  library: string;
}

export interface NativeStatus {
  /** Whether the addon loaded and initialised ONNX Runtime. */
  addon: boolean;
  /** Where the addon is (or was looked for). */
  path?: string;
  /** Why it is not available. */
  reason?: string;
  /** The libonnxruntime it loaded. */
  ortLibrary?: string;
  ortVersion?: string;
  apiVersion?: number;
  providers?: string[];
}

export interface NativeBinding {
  readonly addonPath: string;
  version(): NativeVersion;
  /** The execution providers this ONNX Runtime build reports (`GetAvailableProviders`). */
  providers(): string[];
  createSession(modelPath: string, options: NativeSessionOptions): Promise<NativeSession>;
  isDeviceValue(value: unknown): value is DeviceValue;
}

// ---- the raw addon (runtime/native/addon/src/addon.cc) ----

interface RawError extends Error {
  code?: string;
  stage?: string;
  ortCode?: number;
}

/**
 * Where a run's wall time went, in microseconds (set by the addon when a run succeeds): `wait` from run() to a
 * worker thread starting it (queueing behind earlier runs included), `handOver` to the session's own thread (sessions
 * that capture CUDA graphs run every ORT call there), `bind` the IoBinding of feeds and outputs, `run` ONNX Runtime's
 * Run (for a replayed CUDA graph: its launch), `sync` waiting for the outputs (the device work), `collect` taking the
 * output values, `handBack` to the worker, `settle` from the worker to JavaScript's thread.
 */
export interface NativeRunTiming {
  wait: number;
  handOver: number;
  bind: number;
  run: number;
  sync: number;
  collect: number;
  handBack: number;
  settle: number;
}

/**
 * Greedy decode steps of a static-cache graph in one call ({@link NativeSession.greedy}): the loop of
 * runtime/static.ts's decode step, run by the addon on the session's thread. Step k (from 0) reads cache set
 * `(first + k) % 2`: it writes the rows' token ids into `ids`, 1 into `mask[r, slot + k]` of every row and
 * `slot + k` into `pos`, runs with `feeds[d]` and `bind[d]` (replaying CUDA graph `graphIds[d]` when given), and
 * reads each row's token from `next`. Step 0 feeds `tokens`; a later step feeds a row the pad id if the row was
 * finished before the previous step, else the row's token of the previous step (as runtime/model.ts does). A row
 * finishes when its token is in `stop` (rows flagged in `done` are finished from the start). The loop ends after
 * `steps` steps, or after the step where every row is finished.
 */
export interface NativeGreedyArgs {
  steps: number;
  /** Per direction: every input of the step (`ids`, `mask`, `pos` and one set of caches). */
  feeds: [Record<string, DeviceValue>, Record<string, DeviceValue>];
  /** Per direction: every output, bound (one of them to `next`). */
  bind: [Record<string, DeviceValue>, Record<string, DeviceValue>];
  /** CUDA graph ids of the two directions (sessions with `enable_cuda_graph`). */
  graphIds?: [number, number];
  /** The direction of the first step. */
  first: 0 | 1;
  /** input_ids [B, 1], attention_mask [B, window], cache_position [1] and next_token [B]: int64 device values. */
  ids: DeviceValue;
  mask: DeviceValue;
  pos: DeviceValue;
  next: DeviceValue;
  /** The first step's token id of each row, [B]. */
  tokens: BigInt64Array;
  /** The first step's slot in the window. */
  slot: number;
  /** 1 for rows already finished, [B]. */
  done: Uint8Array;
  /** Token ids that finish a row. */
  stop: BigInt64Array;
  pad: number;
}

/**
 * Where a greedy call's wall time went ({@link NativeSession.greedy}), in microseconds: `steps` run, then, summed
 * over them, `write` (the step's token ids, mask column and position), `run` (ONNX Runtime's Run: for a replayed CUDA
 * graph its launch), `sync` (waiting for the step's outputs: the device work) and `read` (the tokens back); and, once
 * per call, `wait` for a worker thread, `handOver` to the session's thread, `handBack` to the worker and `settle`
 * back on JavaScript's thread.
 */
export interface NativeGreedyTiming {
  steps: number;
  wait: number;
  handOver: number;
  write: number;
  run: number;
  sync: number;
  read: number;
  handBack: number;
  settle: number;
}

/** The addon's session object, which {@link NativeSession} wraps. */
export interface NativeSessionHandle {
  readonly inputNames: string[];
  readonly outputNames: string[];
  readonly inputMetadata: NativeValueMetadata[];
  readonly outputMetadata: NativeValueMetadata[];
  readonly device: 'cpu' | 'cuda';
  readonly deviceId: number;
  readonly busy: boolean;
  readonly released: boolean;
  /** The last successful run's timing (none before the first). */
  readonly lastRunTiming?: NativeRunTiming;
  /** The last successful greedy call's timing (none before the first). */
  readonly lastGreedyTiming?: NativeGreedyTiming;
  run(feeds: Record<string, NativeFeed>, options: { deviceOutputs?: string[]; outputs?: string[]; bind?: Record<string, DeviceValue>; graphId?: number }): Promise<NativeOutputs>;
  allocate(type: TensorElementType, dims: number[]): DeviceValue;
  greedy(args: NativeGreedyArgs): Promise<BigInt64Array>;
  release(): void;
  endProfiling(): string;
}

interface RawAddon {
  init(libraryPath: string): NativeVersion;
  version(): NativeVersion;
  providers(): string[];
  createSession(modelPath: string, options: NativeSessionOptions): Promise<NativeSessionHandle>;
  DeviceValue: abstract new (...args: never[]) => DeviceValue;
}

/** Where `npm run build:native` puts the addon. */
export const ADDON_PATH: string = join(PACKAGE_ROOT, 'runtime', 'native', 'build', 'hubmoe_native.node');

const require = createRequire(import.meta.url);

/** onnxruntime-node's own libonnxruntime (loading onnxruntime-node first, so only that copy is mapped). */
export function onnxruntimeLibraryPath(): string {
  // Import the official binding first: it maps libonnxruntime.so.1, and the addon's dlopen of the same
  // file then returns that copy.
  require('onnxruntime-node');
  const main = require.resolve('onnxruntime-node');
  const dir = join(dirname(main), '..', 'bin', 'napi-v6', process.platform, process.arch);
  const name = process.platform === 'linux' ? 'libonnxruntime.so.1' : process.platform === 'darwin' ? 'libonnxruntime.1.dylib' : 'onnxruntime.dll';
  return join(dir, name);
}

let loaded: { binding?: NativeBinding; status: NativeStatus } | undefined;

function isRawAddon(x: unknown): x is RawAddon {
  const o = x as Partial<Record<keyof RawAddon, unknown>> | null;
  return (
    typeof o === 'object' &&
    o !== null &&
    typeof o.init === 'function' &&
    typeof o.version === 'function' &&
    typeof o.providers === 'function' &&
    typeof o.createSession === 'function' &&
    typeof o.DeviceValue === 'function'
  );
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function tryLoad(): { binding?: NativeBinding; status: NativeStatus } {
  const path = ADDON_PATH;
  if (process.platform !== 'linux') return { status: { addon: false, path, reason: `the native backend is built for Linux only (this is ${process.platform})` } };
  if (!existsSync(path)) {
    return { status: { addon: false, path, reason: `the native addon is not built (${path} is missing); run \`npm run build:native\`` } };
  }
  let lib: string;
  try {
    lib = onnxruntimeLibraryPath();
  } catch (err) {
    return { status: { addon: false, path, reason: `onnxruntime-node could not be loaded: ${message(err)}` } };
  }
  if (!existsSync(lib)) return { status: { addon: false, path, reason: `onnxruntime-node's ONNX Runtime library is missing: ${lib}` } };
  let raw: unknown;
  try {
    raw = require(path);
  } catch (err) {
    return { status: { addon: false, path, reason: `${path} could not be loaded (${message(err)}); rebuild it with \`npm run build:native\`` } };
  }
  if (!isRawAddon(raw)) return { status: { addon: false, path, reason: `${path} is not hubmoe's native addon; rebuild it with \`npm run build:native\`` } };
  const addon = raw;
  let version: NativeVersion;
  let providers: string[];
  try {
    version = addon.init(lib);
    providers = addon.providers();
  } catch (err) {
    return { status: { addon: false, path, reason: `the native addon could not start ONNX Runtime from ${lib}: ${message(err)}` } };
  }
  const binding: NativeBinding = {
    addonPath: path,
    version: () => addon.version(),
    providers: () => addon.providers(),
    createSession: (modelPath, options) => openSession(addon, lib, modelPath, options),
    isDeviceValue: (value: unknown): value is DeviceValue => value instanceof addon.DeviceValue,
  };
  return {
    binding,
    status: { addon: true, path, ortLibrary: version.library, ortVersion: version.ort, apiVersion: version.api, providers },
  };
}

/**
 * The native binding, or undefined when it is not available (not built, wrong platform, ONNX Runtime
 * missing): see {@link nativeStatus} for why. Never throws. Loads once per process.
 */
export function loadNative(): NativeBinding | undefined {
  loaded ??= tryLoad();
  return loaded.binding;
}

/** Whether the addon is available, and if not, why. */
export function nativeStatus(): NativeStatus {
  loaded ??= tryLoad();
  return { ...loaded.status, ...(loaded.status.providers ? { providers: [...loaded.status.providers] } : {}) };
}

/** The native binding, or a HubmoeError('NATIVE') saying why it is not available and what to do. */
export function requireNative(): NativeBinding {
  const b = loadNative();
  if (!b) throw new HubmoeError('NATIVE', `hubmoe's native backend is not available: ${nativeStatus().reason ?? 'unknown reason'}`);
  return b;
}

/** Creates a session on the native backend; throws HubmoeError('NATIVE') when the addon is not available. */
export function createNativeSession(modelPath: string, options: NativeSessionOptions): Promise<NativeSession> {
  return requireNative().createSession(modelPath, options);
}

/** Turns an error from the addon into a HubmoeError. */
function wrapError(err: unknown, context: string): HubmoeError {
  if (err instanceof HubmoeError) return err;
  const e = err as RawError;
  const msg = message(err);
  const code = e?.code === 'BAD_ARGUMENT' ? 'BAD_ARGUMENT' : 'RUNTIME';
  return new HubmoeError(code, `${context}: ${msg}`, { cause: err });
}

function checkOptions(modelPath: string, options: NativeSessionOptions): void {
  if (typeof modelPath !== 'string' || modelPath === '') throw new HubmoeError('BAD_ARGUMENT', 'createSession: the model path must be a non-empty string');
  if (!existsSync(modelPath)) throw new HubmoeError('NOT_FOUND', `${modelPath}: no such model file`);
  if (options?.device !== 'cpu' && options?.device !== 'cuda') {
    throw new HubmoeError('BAD_ARGUMENT', `device must be 'cpu' or 'cuda' (got ${JSON.stringify(options?.device)})`);
  }
  const lib = options.customOpsLibrary;
  if (lib !== undefined) {
    if (!lib.startsWith('/')) throw new HubmoeError('BAD_ARGUMENT', `customOpsLibrary must be an absolute path (got ${lib})`);
    if (!existsSync(lib)) throw new HubmoeError('NOT_FOUND', `${lib}: no such custom-op library; build it with \`npm run build:native\``);
  }
  const cudaId = options.cudaOptions?.['device_id'];
  if (cudaId !== undefined && String(cudaId) !== String(options.deviceId ?? 0)) {
    throw new HubmoeError('BAD_ARGUMENT', `cudaOptions.device_id (${String(cudaId)}) disagrees with deviceId (${options.deviceId ?? 0}); set deviceId only`);
  }
}

async function openSession(addon: RawAddon, ortLibrary: string, modelPath: string, options: NativeSessionOptions): Promise<NativeSession> {
  checkOptions(modelPath, options);
  try {
    return new NativeSession(await addon.createSession(modelPath, options), modelPath);
  } catch (err) {
    const e = err as RawError;
    const msg = message(err);
    if (e?.code === 'BAD_ARGUMENT') throw new HubmoeError('BAD_ARGUMENT', `createSession(${modelPath}): ${msg}`, { cause: err });
    if (e?.stage === 'custom_ops') {
      throw new HubmoeError('NATIVE', `could not register the custom-op library ${options.customOpsLibrary ?? ''}: ${msg}. It must export RegisterCustomOps and be built against this ONNX Runtime (npm run build:native)`, { cause: err });
    }
    if (e?.stage === 'cuda_options' && !/load library/i.test(msg)) {
      throw new HubmoeError('BAD_ARGUMENT', `ONNX Runtime rejected cudaOptions ${JSON.stringify(options.cudaOptions ?? {})}: ${msg}`, { cause: err });
    }
    if (options.device === 'cuda' && (e?.stage === 'cuda' || e?.stage === 'cuda_options' || /cuda|provider|gpu/i.test(msg))) {
      throw new HubmoeError(
        'RUNTIME',
        `could not start ONNX Runtime's CUDA execution provider for ${modelPath}: ${msg}. The CUDA provider libraries (libonnxruntime_providers_cuda.so, libonnxruntime_providers_shared.so) must sit next to ${ortLibrary}, with the CUDA 13 runtime on LD_LIBRARY_PATH and a GPU present; see docs/cuda.md`,
        { cause: err },
      );
    }
    throw new HubmoeError('RUNTIME', `ONNX Runtime could not load ${modelPath}: ${msg}`, { cause: err });
  }
}

/** A session over one ONNX model on the native backend. Runs of one session are queued (in the addon), one at a time. */
export class NativeSession {
  /** Sessions come from {@link NativeBinding.createSession} / {@link createNativeSession}. */
  constructor(
    private readonly raw: NativeSessionHandle,
    readonly modelPath: string,
  ) {}

  get device(): 'cpu' | 'cuda' {
    return this.raw.device;
  }

  get deviceId(): number {
    return this.raw.deviceId;
  }

  get inputNames(): readonly string[] {
    return this.raw.inputNames;
  }

  get outputNames(): readonly string[] {
    return this.raw.outputNames;
  }

  get inputMetadata(): readonly NativeValueMetadata[] {
    return this.raw.inputMetadata;
  }

  get outputMetadata(): readonly NativeValueMetadata[] {
    return this.raw.outputMetadata;
  }

  get released(): boolean {
    return this.raw.released;
  }

  /** Where the last successful run's wall time went (see {@link NativeRunTiming}); undefined before the first. */
  get lastRunTiming(): NativeRunTiming | undefined {
    return this.raw.lastRunTiming;
  }

  /**
   * Runs the model on a worker thread. Feeds are host tensors or device values from earlier runs;
   * outputs named in `deviceOutputs` come back as device values, the others as host tensors. Runs of
   * one session are serialised: a run starts when the previous one has settled. The feeds are taken
   * when run() is called: device values disposed after that are still fed (and freed after the run).
   * A host output of 64 kB or more is handed over without a copy: its array is over ONNX Runtime's own
   * output memory, which is freed when the array is garbage-collected (it stays valid after the session
   * is released). HUBMOE_NATIVE_COPY_OUTPUTS=1 copies every output instead.
   */
  async run(feeds: Record<string, NativeFeed>, options: NativeRunOptions = {}): Promise<NativeOutputs> {
    const opts = {
      ...(options.deviceOutputs ? { deviceOutputs: [...options.deviceOutputs] } : {}),
      ...(options.outputs ? { outputs: [...options.outputs] } : {}),
      ...(options.bind ? { bind: { ...options.bind } } : {}),
      ...(options.graphId !== undefined ? { graphId: options.graphId } : {}),
    };
    try {
      return await this.raw.run(feeds, opts);
    } catch (err) {
      throw wrapError(err, `native run of ${this.modelPath} failed`);
    }
  }

  /** Where the last successful greedy call's wall time went (see {@link NativeGreedyTiming}); undefined before the first. */
  get lastGreedyTiming(): NativeGreedyTiming | undefined {
    return this.raw.lastGreedyTiming;
  }

  /**
   * Greedy decode steps in one call (see {@link NativeGreedyArgs}); resolves to the tokens of the steps run,
   * [steps run × B] row-major. Queued with the session's runs like {@link run}.
   */
  async greedy(args: NativeGreedyArgs): Promise<BigInt64Array> {
    try {
      return await this.raw.greedy(args);
    } catch (err) {
      throw wrapError(err, `native greedy decode of ${this.modelPath} failed`);
    }
  }

  /**
   * A zero-filled value in the session's device memory (CUDA memory on a CUDA session), to bind as an
   * output (`bind`), feed, and write into ({@link DeviceValue.write}).
   */
  allocate(type: TensorElementType, dims: readonly number[]): DeviceValue {
    try {
      return this.raw.allocate(type, [...dims]);
    } catch (err) {
      throw wrapError(err, `allocate(${type}, [${dims.join(', ')}])`);
    }
  }

  /** Stops the profiler and returns the profile file's name. */
  endProfiling(): string {
    try {
      return this.raw.endProfiling();
    } catch (err) {
      throw wrapError(err, `endProfiling(${this.modelPath})`);
    }
  }

  /**
   * Releases the session. Runs already started still complete; device values it produced stay valid
   * (they keep the ONNX Runtime session alive) until disposed.
   */
  async release(): Promise<void> {
    this.raw.release();
  }
}
