/**
 * Runs of the static-cache graph (`onnx/<name>_static.onnx`, built by src/onnx/build.ts with
 * `staticCache`): KV caches are buffers of a fixed number of slots (the window), the attention mask
 * covers the whole window, and `cache_position` says which slots a run writes. A decode step then has
 * the same shapes at every position, so on CUDA (native backend, `enable_cuda_graph`) it is captured
 * once as a CUDA graph and replayed: one launch per step instead of one ONNX Runtime dispatch per node.
 *
 * On the native backend the caches live in two sets of buffers allocated once per batch size: a run
 * reads one set and writes the other (a replayed graph reads and writes the addresses it was captured
 * with, so the two directions are two graphs). The step's inputs (token ids, mask, position) are small
 * buffers written before each run; the logits come back through one bound buffer. Greedy decoding of
 * a graph with `next_token` can hand the step loop itself to the addon (`DecodeStream.greedy`,
 * runtime/native/addon/src/greedy.cc), which then runs a chunk of steps without returning to JavaScript.
 * On onnxruntime-node the same graph runs with host tensors, each step's present caches fed back as
 * the next step's past ones.
 */
import { HubmoeError } from '../src/errors.js';
import { Tensor, isDeviceValue } from './backend.js';
import type { InferenceBackend, Value } from './backend.js';
import type { DeviceValue } from './native/index.js';

/** The static graph's inputs other than caches. */
const STEP_INPUTS = new Set(['input_ids', 'attention_mask', 'cache_position']);
/** The fused static graph's output of each row's greedy token at the last position, [batch_size] int64. */
const NEXT_TOKEN = 'next_token';

function idsOf(v: Value | undefined): number[] | undefined {
  if (!v) return undefined;
  const t = isDeviceValue(v) ? v.download() : v;
  return Array.from(t.data as BigInt64Array, (x) => Number(x));
}

/** The name of the present output that carries a past input forward. */
export function presentName(past: string): string {
  return past.startsWith('past_key_values.') ? past.replace('past_key_values.', 'present.') : past.replace(/^past_/, 'present_');
}

interface CacheInfo {
  input: string;
  output: string;
  type: 'float32' | 'float16';
  shape: Array<number | string>;
}

/** cache_position for a run from an empty window: slots 0…T-1. */
function slots(T: number): Tensor {
  return new Tensor('int64', BigInt64Array.from({ length: T }, (_, i) => BigInt(i)), [T]);
}

/** Host outputs of a prefill or forward: logits [B, T, V] and any extra outputs asked for. */
export type HostOutputs = Record<string, Value>;

/**
 * The logits of each row's last position, [B × V], from a run's `logits` output [B, T, V]: read from a
 * device value without copying the rest (which is then freed and removed from `out`), or sliced from a host one.
 */
export function lastLogits(out: Record<string, Value>, B: number, T: number, V: number): Float32Array {
  const l = out.logits;
  if (!l) throw new HubmoeError('RUNTIME', 'the model returned no logits');
  if (isDeviceValue(l)) {
    try {
      return l.read((T - 1) * V, V, T * V, B).data as Float32Array;
    } finally {
      l.dispose();
      delete out.logits;
    }
  }
  const data = l.data as Float32Array;
  const rows = new Float32Array(B * V);
  for (let r = 0; r < B; r++) rows.set(data.subarray((r * T + T - 1) * V, (r * T + T) * V), r * V);
  return rows;
}

/** A started generation: the prefill's outputs, its last position's logits, and the decode steps. */
export interface Begun {
  /** The prefill's other outputs (host), e.g. SCAP counters. */
  out: HostOutputs;
  /** Logits of each row's last prompt position, [B × V]. */
  last: Float32Array;
  stream: DecodeStream;
}

/** A decode step's results, read from the device only when asked for (before the next step, which overwrites them). */
export interface StepResult {
  /** The step's logits, [B × V]. */
  logits(): Float32Array;
  /**
   * Each row's greedy choice (the lowest index of the largest of the first vocab.size logits), computed on the
   * device by the graph's `next_token` output (fused static-cache graphs); undefined when the graph has none.
   */
  tokens(): number[] | undefined;
}

/** One generation's decode steps. */
export interface DecodeStream {
  /** Feeds each row's next token and runs the step. */
  step(next: readonly number[]): Promise<StepResult>;
  /**
   * Greedy steps in one call to the native backend (fused static-cache graphs, which compute `next_token`):
   * at most `steps` steps from feeding `next`, each later step feeding a row its previous token, or the pad id
   * once the row is finished (flagged in `done`, or its token was in `stop`); stops early when every row is.
   * Returns each step's tokens. Absent where the backend or the graph cannot.
   */
  greedy?(next: readonly number[], done: readonly boolean[], steps: number, stop: readonly number[], pad: number): Promise<number[][]>;
  /** Frees what the generation held (buffers of a one-off window; a kept window is released for reuse). */
  end(): void;
}

/** Buffers of one batch size and window on the native backend. */
interface Window {
  B: number;
  S: number;
  sets: [Record<string, DeviceValue>, Record<string, DeviceValue>];
  ids: DeviceValue;
  mask: DeviceValue;
  pos: DeviceValue;
  logits: DeviceValue;
  /** The graph's `next_token` output [B] (when it has one). */
  next?: DeviceValue;
  /** CUDA graph ids for a step reading set 0 and for one reading set 1 (graph sessions only). */
  graphIds?: [number, number];
  busy: boolean;
  /** When a generation last took it (for eviction). */
  used: number;
}

export interface StaticOptions {
  /**
   * The longest window kept (and captured as CUDA graphs). A generation of n tokens (prompt + new) uses the kept
   * window of its batch size and of n rounded up to a power of two (at least 256 slots, at most maxLength);
   * longer generations get a window of their own, uncaptured.
   */
  maxLength: number;
  /** Padded vocabulary size (the logits' last dim). */
  vocab: number;
  /** Kept windows at most (default 8); the least recently used idle one is freed to make room. */
  maxWindows?: number;
}

/** Slots of the kept window for a generation of `need` tokens. */
export function windowSlots(need: number, maxLength: number): number {
  let s = 256;
  while (s < need) s *= 2;
  return Math.min(s, maxLength);
}

export class StaticCache {
  private readonly caches: CacheInfo[];
  /** Kept windows by `${B}x${S}`. */
  private readonly windows = new Map<string, Window>();
  private nextGraphId = 1;
  private clock = 0;

  constructor(
    private readonly backend: InferenceBackend,
    private readonly opts: StaticOptions,
  ) {
    for (const name of STEP_INPUTS) {
      if (!backend.inputNames.includes(name)) throw new HubmoeError('BAD_SPEC', `the static-cache graph has no input ${name}; reconvert the model with this hubmoe`);
    }
    this.caches = backend.inputNames
      .filter((n) => !STEP_INPUTS.has(n))
      .map((input) => {
        const type = backend.inputType(input);
        if (type !== 'float32' && type !== 'float16') throw new HubmoeError('BAD_SPEC', `static-cache graph input ${input} has element type ${type}; caches are float32 or float16`);
        const output = presentName(input);
        if (!backend.outputNames.includes(output)) throw new HubmoeError('BAD_SPEC', `the static-cache graph has input ${input} but no output ${output}`);
        return { input, output, type, shape: backend.inputShape(input) };
      });
  }

  /** Whether the graph computes each step's greedy token (output `next_token`, fused static-cache graphs). */
  get nextToken(): boolean {
    return this.backend.outputNames.includes(NEXT_TOKEN);
  }

  /** Whether decode steps are replayed CUDA graphs. */
  get graphs(): boolean {
    return this.backend.cudaGraph === true;
  }

  private dims(c: CacheInfo, B: number, S: number): number[] {
    return c.shape.map((d) => {
      if (typeof d === 'number') return d;
      if (d === 'batch_size') return B;
      if (d === 'max_length') return S;
      throw new HubmoeError('BAD_SPEC', `static-cache graph input ${c.input} has an unknown dim ${d}`);
    });
  }

  private hostCaches(B: number, S: number): Record<string, Value> {
    const feeds: Record<string, Value> = {};
    for (const c of this.caches) {
      const dims = this.dims(c, B, S);
      const n = dims.reduce((a, b) => a * b, 1);
      feeds[c.input] = c.type === 'float16' ? new Tensor('float16', new Uint16Array(n), dims) : new Tensor('float32', new Float32Array(n), dims);
    }
    return feeds;
  }

  private allocWindow(B: number, S: number, graph: boolean): Window {
    const alloc = this.backend.allocate!.bind(this.backend);
    const made: DeviceValue[] = [];
    const a = <T extends DeviceValue>(v: T): T => {
      made.push(v);
      return v;
    };
    try {
      const set = (): Record<string, DeviceValue> => Object.fromEntries(this.caches.map((c) => [c.input, a(alloc(c.type, this.dims(c, B, S)))]));
      const w: Window = {
        B,
        S,
        sets: [set(), set()],
        ids: a(alloc('int64', [B, 1])),
        mask: a(alloc('int64', [B, S])),
        pos: a(alloc('int64', [1])),
        logits: a(alloc('float32', [B, 1, this.opts.vocab])),
        ...(this.nextToken ? { next: a(alloc('int64', [B])) } : {}),
        busy: false,
        used: 0,
      };
      if (graph) w.graphIds = [this.nextGraphId++, this.nextGraphId++];
      return w;
    } catch (err) {
      for (const v of made) v.dispose();
      throw err;
    }
  }

  private static disposeWindow(w: Window): void {
    for (const set of w.sets) for (const v of Object.values(set)) v.dispose();
    for (const v of [w.ids, w.mask, w.pos, w.logits, ...(w.next ? [w.next] : [])]) v.dispose();
  }

  /**
   * A forward over whole rows from empty caches (no state kept): logits [B, T, V] (host, or with `deviceLogits` a
   * device value on the native backend) and `extra` outputs (host). `mask` is [B, T] row-major.
   */
  async forward(ids: BigInt64Array, mask: BigInt64Array, B: number, T: number, extra: readonly string[], deviceLogits = false): Promise<HostOutputs> {
    const base = { input_ids: new Tensor('int64', ids, [B, T]), attention_mask: new Tensor('int64', mask, [B, T]), cache_position: slots(T) };
    if (!this.backend.allocate || !this.backend.runBound) {
      return this.backend.run({ ...base, ...this.hostCaches(B, T) });
    }
    const past: Record<string, DeviceValue> = {};
    try {
      for (const c of this.caches) past[c.input] = this.backend.allocate(c.type, this.dims(c, B, T));
      const host = deviceLogits ? [...extra] : ['logits', ...extra];
      return await this.backend.runBound({ ...base, ...past }, {}, host, this.graphs ? -1 : undefined, deviceLogits ? ['logits'] : []);
    } finally {
      for (const v of Object.values(past)) v.dispose();
    }
  }

  /**
   * Starts a generation: the prefill of `ids` ([B, T], left-padded, `mask` [B, T]) into a window with
   * room for `maxNew` more tokens. Returns the logits of the last position ([B × V]; on the native
   * backend only those are copied to the host), the prefill's `extra` outputs, and the stream of
   * decode steps.
   */
  async begin(ids: BigInt64Array, mask: BigInt64Array, B: number, T: number, maxNew: number, extra: readonly string[]): Promise<Begun> {
    // onnxruntime-node returns every output, `extra` included.
    if (!this.backend.allocate || !this.backend.runBound) return this.beginHost(ids, mask, B, T, maxNew);
    const need = T + maxNew;
    let w: Window;
    let oneOff: boolean;
    // Without CUDA graphs a window as long as this generation needs is cheapest; with them, windows are kept
    // (per batch size and power-of-two length) so that their captured graphs are replayed by later generations.
    const fits = this.graphs && need <= this.opts.maxLength;
    const key = `${B}x${windowSlots(need, this.opts.maxLength)}`;
    const kept = fits ? this.windows.get(key) : undefined;
    if (kept && !kept.busy) {
      w = kept;
      oneOff = false;
    } else if (fits && !kept) {
      this.makeRoom();
      w = this.allocWindow(B, windowSlots(need, this.opts.maxLength), true);
      this.windows.set(key, w);
      oneOff = false;
    } else {
      // Longer than any kept window, or that window is in use by another generation: a window of its own, not captured.
      w = this.allocWindow(B, need, false);
      oneOff = true;
    }
    w.used = ++this.clock;
    w.busy = true;
    const release = (): void => {
      w.busy = false;
      if (oneOff) StaticCache.disposeWindow(w);
    };
    const S = w.S;
    const run = this.backend.runBound.bind(this.backend);
    let out: HostOutputs;
    try {
      for (const v of Object.values(w.sets[0])) v.zero();
      w.mask.zero();
      w.mask.write(mask, 0, T, S);
      const feeds: Record<string, Value> = {
        input_ids: new Tensor('int64', ids, [B, T]),
        attention_mask: w.mask,
        cache_position: slots(T),
        ...w.sets[0],
      };
      const bind = Object.fromEntries(this.caches.map((c) => [c.output, w.sets[1][c.input]!]));
      out = await run(feeds, bind, extra, w.graphIds ? -1 : undefined, ['logits']);
    } catch (err) {
      release();
      throw err;
    }
    let cur: 0 | 1 = 1;
    let slot = T;
    const ones = new BigInt64Array(B).fill(1n);
    // A step reading cache set d: its feeds, and its outputs, every one bound (a captured graph replays what it was
    // captured with); the host then reads the logits or, for greedy decoding, only the tokens.
    const feedsOf = (d: 0 | 1): Record<string, DeviceValue> => ({ input_ids: w.ids, attention_mask: w.mask, cache_position: w.pos, ...w.sets[d] });
    const bindOf = (d: 0 | 1): Record<string, DeviceValue> => {
      const bind: Record<string, DeviceValue> = { logits: w.logits, ...(w.next ? { [NEXT_TOKEN]: w.next } : {}) };
      const other = w.sets[d === 0 ? 1 : 0];
      for (const c of this.caches) bind[c.output] = other[c.input]!;
      return bind;
    };
    const full = (n: number): void => {
      if (slot + n > S) throw new HubmoeError('RUNTIME', `internal error: the static window of ${S} slots is full`);
    };
    const greedySteps = this.backend.greedySteps?.bind(this.backend);
    const next = w.next;
    const stream: DecodeStream = {
      step: async (tokens) => {
        full(1);
        w.ids.write(BigInt64Array.from(tokens, (t) => BigInt(t)));
        w.mask.write(ones, slot, 1, S);
        w.pos.write(BigInt64Array.of(BigInt(slot)));
        await run(feedsOf(cur), bindOf(cur), [], w.graphIds ? w.graphIds[cur] : undefined);
        cur = cur === 0 ? 1 : 0;
        slot += 1;
        return { logits: () => w.logits.download().data as Float32Array, tokens: () => idsOf(w.next) };
      },
      ...(greedySteps && next
        ? {
            greedy: async (tokens: readonly number[], done: readonly boolean[], steps: number, stop: readonly number[], pad: number): Promise<number[][]> => {
              full(steps);
              const out = await greedySteps({
                steps,
                feeds: [feedsOf(0), feedsOf(1)],
                bind: [bindOf(0), bindOf(1)],
                ...(w.graphIds ? { graphIds: w.graphIds } : {}),
                first: cur,
                ids: w.ids,
                mask: w.mask,
                pos: w.pos,
                next,
                tokens: BigInt64Array.from(tokens, (t) => BigInt(t)),
                slot,
                done: Uint8Array.from(done, (d) => (d ? 1 : 0)),
                stop: BigInt64Array.from(stop, (t) => BigInt(t)),
                pad,
              });
              const n = out.length / B;
              if (n % 2 === 1) cur = cur === 0 ? 1 : 0;
              slot += n;
              return Array.from({ length: n }, (_, k) => Array.from(out.subarray(k * B, (k + 1) * B), (t) => Number(t)));
            },
          }
        : {}),
      end: release,
    };
    return { out, last: lastLogits(out, B, T, this.opts.vocab), stream };
  }

  /** onnxruntime-node: host tensors, present caches fed back as the next past ones. */
  private async beginHost(ids: BigInt64Array, mask: BigInt64Array, B: number, T: number, maxNew: number): Promise<Begun> {
    const S = T + maxNew;
    const full = new BigInt64Array(B * S);
    for (let r = 0; r < B; r++) full.set(mask.subarray(r * T, (r + 1) * T), r * S);
    let out = await this.backend.run({
      input_ids: new Tensor('int64', ids, [B, T]),
      attention_mask: new Tensor('int64', full, [B, S]),
      cache_position: slots(T),
      ...this.hostCaches(B, S),
    });
    const first = out;
    const last = lastLogits(first, B, T, this.opts.vocab);
    let slot = T;
    const stream: DecodeStream = {
      step: async (next) => {
        if (slot >= S) throw new HubmoeError('RUNTIME', `internal error: the static window of ${S} slots is full`);
        for (let r = 0; r < B; r++) full[r * S + slot] = 1n;
        const feeds: Record<string, Value> = {
          input_ids: new Tensor('int64', BigInt64Array.from(next, (t) => BigInt(t)), [B, 1]),
          attention_mask: new Tensor('int64', full.slice(), [B, S]),
          cache_position: new Tensor('int64', BigInt64Array.of(BigInt(slot)), [1]),
        };
        for (const c of this.caches) {
          const v = out[c.output];
          if (!v) throw new HubmoeError('RUNTIME', `the model did not return ${c.output}`);
          feeds[c.input] = v;
        }
        out = await this.backend.run(feeds);
        slot += 1;
        const l = out.logits;
        if (!l || isDeviceValue(l)) throw new HubmoeError('RUNTIME', 'the model returned no host logits');
        const chosen = out[NEXT_TOKEN];
        return { logits: () => l.data as Float32Array, tokens: () => idsOf(chosen) };
      },
      end: () => {},
    };
    return { out: first, last, stream };
  }

  /** Frees the least recently used idle windows while there are as many as allowed. */
  private makeRoom(): void {
    const limit = Math.max(1, this.opts.maxWindows ?? 8);
    while (this.windows.size >= limit) {
      let oldest: [string, Window] | undefined;
      for (const e of this.windows) if (!e[1].busy && (!oldest || e[1].used < oldest[1].used)) oldest = e;
      if (!oldest) return;
      // Its graphs stay captured in the session but are never replayed again: new windows take new ids.
      StaticCache.disposeWindow(oldest[1]);
      this.windows.delete(oldest[0]);
    }
  }

  /** The kept windows' sizes, `${B}x${S}` (for tests and diagnostics). */
  keptWindows(): string[] {
    return [...this.windows.keys()];
  }

  /** Frees the kept windows (their CUDA graphs stay with the session until it is released). */
  dispose(): void {
    for (const w of this.windows.values()) StaticCache.disposeWindow(w);
    this.windows.clear();
  }
}
