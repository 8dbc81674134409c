/**
 * hubmoe's execution backend for transformers.js.
 *
 * transformers.js creates its sessions with onnxruntime-common's `InferenceSession.create`, which
 * picks a backend by the names in `session_options.executionProviders`. hubmoe's native CUDA runtime
 * registers itself there under the name `hubmoe` (registerHubmoeBackend) and records what it can do
 * in a process-wide registry (a `globalThis` slot, so every copy of this module sees it). When it is
 * present, a hubmoe model loaded with `device: 'cuda'` is routed to it, and its cache outputs
 * (present_*) are asked for as device buffers (`preferredOutputLocation: 'gpu-buffer'`), which
 * transformers.js keeps in its DynamicCache and feeds back unchanged: the caches stay on the GPU and
 * only the logits come back to the CPU. Without it, transformers.js's own CUDA path is left alone.
 */
import type { Backend } from 'onnxruntime-node';
import { HubmoeError } from '../errors.js';
import { cacheOutputNames, isHubmoeConfig } from './config.js';
import type { ConfigJson } from './config.js';

export const HUBMOE_BACKEND_NAME = 'hubmoe';

const REGISTRY = Symbol.for('hubmoe.transformers.backend');

/** What the registered hubmoe backend declares about itself. */
export interface HubmoeBackendInfo {
  /** The onnxruntime-common backend name it is registered under (always 'hubmoe'). */
  readonly name: typeof HUBMOE_BACKEND_NAME;
  /** transformers.js `device` values routed to it (default ['cuda']). */
  readonly devices: readonly string[];
  /** It returns cache outputs as device buffers when asked (preferredOutputLocation 'gpu-buffer') and takes them back as feeds. */
  readonly deviceCaches: boolean;
  /** Free-form description (e.g. the addon's version and GPU). */
  readonly description?: string;
}

type Registry = { [REGISTRY]?: HubmoeBackendInfo };

/** The registered hubmoe backend, or undefined when none is (then `device: 'cuda'` is not rerouted). */
export function hubmoeBackend(): HubmoeBackendInfo | undefined {
  return (globalThis as Registry)[REGISTRY];
}

/**
 * Records that a backend named 'hubmoe' is registered with the onnxruntime-common instance
 * transformers.js uses. registerHubmoeBackend calls this; call it directly only when you register
 * the backend yourself.
 */
export function markHubmoeBackend(info: Partial<Omit<HubmoeBackendInfo, 'name'>> = {}): HubmoeBackendInfo {
  const full: HubmoeBackendInfo = {
    name: HUBMOE_BACKEND_NAME,
    devices: [...(info.devices ?? ['cuda'])],
    deviceCaches: info.deviceCaches ?? false,
    ...(info.description ? { description: info.description } : {}),
  };
  (globalThis as Registry)[REGISTRY] = Object.freeze(full);
  return full;
}

/** Forgets the registration record (the onnxruntime-common registration itself cannot be undone). */
export function unmarkHubmoeBackend(): void {
  delete (globalThis as Registry)[REGISTRY];
}

/**
 * Registers an onnxruntime-common backend under the name 'hubmoe' with onnxruntime-node (the
 * instance transformers.js uses in Node) and records it. Its priority is negative, so it is never
 * chosen as a fallback: only sessions that name it (or that this plugin routes to it) use it.
 */
export async function registerHubmoeBackend(backend: Backend, info: Partial<Omit<HubmoeBackendInfo, 'name'>> = {}): Promise<HubmoeBackendInfo> {
  let ort: { registerBackend: (name: string, backend: Backend, priority: number) => void };
  try {
    const mod = (await import('onnxruntime-node')) as unknown as { default?: typeof ort } & typeof ort;
    ort = typeof mod.registerBackend === 'function' ? mod : mod.default!;
  } catch (err) {
    throw new HubmoeError('RUNTIME', `cannot register the hubmoe backend: onnxruntime-node did not load (${(err as Error).message})`, { cause: err });
  }
  try {
    ort.registerBackend(HUBMOE_BACKEND_NAME, backend, -1);
  } catch (err) {
    throw new HubmoeError('RUNTIME', `onnxruntime-common refused the hubmoe backend: ${(err as Error).message} (a different backend is already registered as "hubmoe")`, { cause: err });
  }
  return markHubmoeBackend(info);
}

/** The options of `from_pretrained` / `pipeline` this module reads and may change. */
export interface RoutableOptions {
  device?: unknown;
  session_options?: Record<string, unknown> | null;
  [key: string]: unknown;
}

function epName(ep: unknown): string | undefined {
  if (typeof ep === 'string') return ep;
  if (ep && typeof ep === 'object' && typeof (ep as { name?: unknown }).name === 'string') return (ep as { name: string }).name;
  return undefined;
}

/** The device transformers.js will pick for the decoder session ('model'). */
function requestedDevice(config: ConfigJson, options: RoutableOptions): string | undefined {
  const d = options.device;
  if (typeof d === 'string') return d;
  if (d && typeof d === 'object' && typeof (d as Record<string, unknown>).model === 'string') return (d as Record<string, string>).model;
  const tjs = config['transformers.js_config'];
  const fromConfig = tjs && typeof tjs === 'object' ? (tjs as Record<string, unknown>).device : undefined;
  return typeof fromConfig === 'string' ? fromConfig : undefined;
}

/**
 * The session options a hubmoe model should be created with: `device` in the backend's devices
 * becomes `executionProviders: ['hubmoe']` (unless the caller chose providers), and sessions on the
 * hubmoe backend get their cache outputs as device buffers when the backend supports that (unless
 * the caller set preferredOutputLocation). Anything else is returned unchanged.
 */
export function routeSessionOptions<T extends RoutableOptions>(config: ConfigJson, options: T, backend: HubmoeBackendInfo | undefined = hubmoeBackend()): T & RoutableOptions {
  if (!isHubmoeConfig(config)) return options;
  const sessionOptions: Record<string, unknown> = { ...(options.session_options ?? {}) };
  let providers = sessionOptions.executionProviders as unknown[] | undefined;
  if (providers === undefined || providers === null) {
    const device = requestedDevice(config, options);
    if (!backend || device === undefined || !backend.devices.includes(device)) return options;
    providers = [HUBMOE_BACKEND_NAME];
    sessionOptions.executionProviders = providers;
  }
  if (!Array.isArray(providers) || !providers.some((ep) => epName(ep) === HUBMOE_BACKEND_NAME)) return options;
  if (backend?.deviceCaches && sessionOptions.preferredOutputLocation === undefined) {
    sessionOptions.preferredOutputLocation = Object.fromEntries(cacheOutputNames(config).map((n) => [n, 'gpu-buffer']));
  }
  return { ...options, session_options: sessionOptions };
}
