/**
 * loadModel(dir) → a model that runs forward passes and generates with caches.
 *
 * Batches of different lengths are left-padded with the pad id and masked, as transformers pads
 * for generation. Generation runs one prefill over the prompts, then one cached step per token
 * (conv, ssm and KV caches carried from each step's present_* outputs to the next step's past_*).
 */
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { HubmoeError } from '../src/errors.js';
import type { ModelSpec } from '../src/schema/spec.js';
import { loadSpec } from '../src/schema/load.js';
import { Tensor, chooseBackend, createBackend, isDeviceValue } from './backend.js';
import type { BackendName, Device, HostValue, InferenceBackend, SessionOptions, Value } from './backend.js';
import { isSampling, makeRng, pickToken, validateSampling } from './sampling.js';
import type { SamplingOptions } from './sampling.js';
import { StaticCache, lastLogits, presentName } from './static.js';
import { NllScorer } from './nll.js';
import { IncrementalDecoder, loadTokenizer } from './tokenizer.js';
import type { TextTokenizer } from './tokenizer.js';

export interface LoadOptions {
  device?: Device;
  /** Which ONNX file: fp32 (onnx/model.onnx) or fp16 (onnx/model_fp16.onnx); default fp32 on CPU, fp16 on CUDA when present. */
  dtype?: 'fp32' | 'fp16';
  /** CPU threads (default: ONNX Runtime's choice). */
  threads?: number;
  /**
   * 'native' (hubmoe's addon: caches stay on the GPU, custom ops) or 'onnxruntime-node'. Default:
   * native for fused models and, when it is built, for CUDA; onnxruntime-node otherwise.
   */
  backend?: BackendName;
  /** CUDA provider options for the native backend (e.g. { gpu_mem_limit: 8e9 }). */
  cudaOptions?: Record<string, string | number | boolean>;
  /** Native backend: ONNX Runtime's profile file prefix (the trace is written when the model is disposed). */
  profileFile?: string;
  /**
   * Run the static-cache graph (onnx/<name>_static.onnx): fixed-size caches written in place, decode
   * steps of fixed shapes. Default: on for CUDA with the native backend (when the model dir has the
   * graph), off otherwise.
   */
  staticCache?: boolean;
  /**
   * With the static-cache graph on CUDA (native backend): capture each decode step as a CUDA graph and
   * replay it (default: on for the fused target; the portable target's ONNX Runtime MoE kernel is not
   * bit-for-bit repeatable, so it is opt-in there). A generation of n tokens (prompt + new) up to `maxLength`
   * uses a window kept for its batch size and n rounded up to a power of two (at least 256), with its graphs;
   * longer ones run uncaptured in a window of their own.
   */
  cudaGraph?: boolean;
  /** The longest static window kept with its CUDA graphs (default 4096 slots). */
  maxLength?: number;
  /**
   * Greedy decoding with the static-cache graph of a fused model (native backend): run the decode steps in a loop
   * inside the native addon, handing the tokens to JavaScript a call at a time (4 steps, then about 100 ms of steps,
   * at most 256), instead of one call from JavaScript per step (default true). The tokens are the same; `onToken`
   * then fires a call's tokens at a time.
   */
  decodeLoop?: boolean;
}

/** Greedy steps inside the addon: the first call's steps (tokens reach `onToken` soon after the prefill). */
export const DECODE_FIRST_CHUNK = 4;

/**
 * Greedy steps inside the addon: the steps of the next call, from the last call's time per step, so that a call
 * takes about 100 ms (tokens reach `onToken` at least that often, and a call's hand-overs between threads, a few
 * tenths of a millisecond, stay a small share): 1 step for steps of 100 ms or more, at most 256.
 */
export function decodeChunk(msPerStep: number): number {
  if (!(msPerStep > 0)) return 256;
  return Math.max(1, Math.min(256, Math.floor(100 / msPerStep)));
}

/** Which graph runs, by name (the CLI's and the benchmarks' `--graph`); `auto` is loadModel's default choice. */
export type GraphChoice = 'auto' | 'dynamic' | 'static' | 'cuda-graph';

/** loadModel's options for a graph choice: the dynamic graph, the static-cache graph, or that one with CUDA graphs. */
export function graphChoice(choice: string | undefined): Pick<LoadOptions, 'staticCache' | 'cudaGraph'> {
  switch (choice) {
    case undefined:
    case 'auto':
      return {};
    case 'dynamic':
      return { staticCache: false };
    case 'static':
      return { staticCache: true, cudaGraph: false };
    case 'cuda-graph':
      return { staticCache: true, cudaGraph: true };
    default:
      throw new HubmoeError('BAD_ARGUMENT', `the graph must be auto, dynamic, static or cuda-graph (got ${choice})`);
  }
}

export interface Logits {
  /** Row-major [batch, seq, vocab]. */
  data: Float32Array;
  dims: [number, number, number];
}

export interface ForwardOptions {
  /** 1 for real tokens, 0 for padding; rows as long as their ids. Default: all ones (ragged rows are left-padded). */
  attentionMask?: number[][];
}

export type FinishReason = 'eos' | 'stop' | 'length';

export interface GenerateOptions extends SamplingOptions {
  maxNewTokens?: number;
  /** Token ids that end a row (default: the model's eos ids). */
  eosTokenIds?: number[];
  /** Token sequences that end a row when generated (kept in the output). */
  stopSequences?: number[][];
  /** Keep generating past eos. */
  ignoreEos?: boolean;
  /** Called for every generated token as it comes; returning true ends that row (reason 'stop'). */
  onToken?: (event: TokenEvent) => boolean | void;
  /** Return the logits each step chose from ([batch, vocab] per step). */
  outputLogits?: boolean;
}

export interface TokenEvent {
  row: number;
  token: number;
  step: number;
}

export interface GenerateResult {
  /** The generated tokens of each row (prompt excluded). */
  tokens: number[][];
  finishReasons: FinishReason[];
  /** Per step: [batch × vocab] logits, when outputLogits was set. */
  logits?: Float32Array[];
}

export interface TextGenerateOptions extends Omit<GenerateOptions, 'onToken' | 'stopSequences'> {
  /** Strings that end the text (cut from the output). */
  stop?: string[];
  /** Called with each new piece of text of a row. */
  onText?: (row: number, text: string) => void;
  addSpecialTokens?: boolean;
}

export interface HubmoeModel {
  readonly dir: string;
  readonly spec: ModelSpec;
  readonly device: Device;
  readonly dtype: 'fp32' | 'fp16';
  /** The backend running the model. */
  readonly backendName: BackendName;
  readonly tokenizer: TextTokenizer | undefined;
  /** Which graph runs: the dynamic one, the static-cache one, or the static-cache one with CUDA graphs of the decode step. */
  readonly graph: 'dynamic' | 'static' | 'static+cuda-graph';
  forward(ids: number[][], options?: ForwardOptions): Promise<Logits>;
  generate(prompts: number[][], options?: GenerateOptions): Promise<GenerateResult>;
  generateText(prompts: string | string[], options?: TextGenerateOptions): Promise<string[]>;
  /**
   * SCAP-pruned models (portable target): inputs kept and seen at each sparsified site since load (or the
   * last reset), accumulated over every run (with the static-cache graph: forward passes and prefills; its
   * decode steps write only caches and logits); achieved sparsity = 1 − kept / total.
   */
  scapStats(): Map<string, { kept: number; total: number }>;
  resetScapStats(): void;
  /** Perplexity of a token sequence, over consecutive windows (see PerplexityOptions). */
  perplexity(ids: readonly number[], options?: PerplexityOptions): Promise<PerplexityResult>;
  dispose(): Promise<void>;
}

export interface PerplexityOptions {
  /** Tokens per window; each window predicts its next tokens from its own prefix only (default 256). */
  window?: number;
  /** Windows per forward pass (default 8). */
  batch?: number;
  /** Called after each batch with the windows done so far. */
  onProgress?: (done: number, total: number) => void;
}

export interface PerplexityResult {
  perplexity: number;
  /** Mean negative log-likelihood per predicted token (nats). */
  nll: number;
  /** Tokens predicted. */
  tokens: number;
}

async function exists(p: string): Promise<boolean> {
  try {
    await stat(p);
    return true;
  } catch {
    return false;
  }
}

export async function loadModel(dir: string, options: LoadOptions = {}): Promise<HubmoeModel> {
  const device = options.device ?? 'cpu';
  if (device !== 'cpu' && device !== 'cuda') throw new HubmoeError('BAD_ARGUMENT', `device must be cpu or cuda (got ${String(device)})`);
  const spec = await loadSpec(dir);
  const fp16Path = join(dir, 'onnx', 'model_fp16.onnx');
  const fp32Path = join(dir, 'onnx', 'model.onnx');
  const dtype = options.dtype ?? (device === 'cuda' && (await exists(fp16Path)) ? 'fp16' : 'fp32');
  if (dtype === 'fp16' && device === 'cpu') {
    throw new HubmoeError('BAD_ARGUMENT', 'fp16 models run on CUDA only (ONNX Runtime\'s CPU kernels for these ops are fp32); use the fp32 model on CPU');
  }
  const path = dtype === 'fp16' ? fp16Path : fp32Path;
  if (!(await exists(path))) {
    throw new HubmoeError('NOT_FOUND', `${path} is missing; convert with --dtype ${dtype === 'fp16' ? 'fp16' : 'fp32'} (or both)`);
  }
  const sessionOptions = {
    device,
    threads: options.threads,
    backend: options.backend,
    cudaOptions: options.cudaOptions,
    profileFile: options.profileFile,
    customOps: spec.export?.target === 'fused',
  };
  const staticPath = path.replace(/\.onnx$/, '_static.onnx');
  const maxLength = options.maxLength ?? 4096;
  if (!Number.isInteger(maxLength) || maxLength < 2) throw new HubmoeError('BAD_ARGUMENT', `maxLength must be an integer of at least 2 (got ${maxLength})`);
  const nativeCuda = device === 'cuda' && chooseBackend(sessionOptions) === 'native';
  if (options.cudaGraph === true && !nativeCuda) {
    throw new HubmoeError('BAD_ARGUMENT', `cudaGraph needs device 'cuda' and the native backend (got device ${device}, backend ${chooseBackend(sessionOptions)})`);
  }
  if (options.cudaGraph === true && options.staticCache === false) {
    throw new HubmoeError('BAD_ARGUMENT', 'cudaGraph needs the static-cache graph; it cannot be combined with staticCache: false');
  }
  const useStatic = options.staticCache ?? (nativeCuda && (await exists(staticPath)));
  if (useStatic && !(await exists(staticPath))) {
    throw new HubmoeError('NOT_FOUND', `${staticPath} is missing (the static-cache graph, which model dirs converted before it existed lack): reconvert the model with this hubmoe, or load it with staticCache: false`);
  }
  const graph = useStatic && nativeCuda && (options.cudaGraph ?? spec.export?.target === 'fused');
  const backend = await createBackend(useStatic ? staticPath : path, { ...sessionOptions, cudaGraph: graph });
  const tokenizer = await loadTokenizer(dir);
  const stat = useStatic ? new StaticCache(backend, { maxLength, vocab: spec.vocab.padded_size }) : undefined;
  // perplexity()'s NLL graph runs on the same device and backend as the model.
  const nllOptions: SessionOptions = { device, threads: options.threads, backend: backend.name, cudaOptions: options.cudaOptions };
  return new Model(dir, spec, backend, dtype, tokenizer, stat, nllOptions, options.decodeLoop ?? true);
}

class Model implements HubmoeModel {
  private readonly cacheInputs: string[];
  private readonly cacheOutputs: string[];
  private readonly padId: number;

  constructor(
    readonly dir: string,
    readonly spec: ModelSpec,
    private readonly backend: InferenceBackend,
    readonly dtype: 'fp32' | 'fp16',
    readonly tokenizer: TextTokenizer | undefined,
    private readonly staticCache?: StaticCache,
    private readonly nllOptions?: SessionOptions,
    private readonly decodeLoop = true,
  ) {
    this.cacheInputs = backend.inputNames.filter((n) => n !== 'input_ids' && n !== 'attention_mask' && n !== 'cache_position');
    this.cacheOutputs = this.cacheInputs.map(presentName);
    this.padId = spec.vocab.pad ?? 0;
  }

  get device(): Device {
    return this.backend.device;
  }

  get backendName(): BackendName {
    return this.backend.name;
  }

  get graph(): 'dynamic' | 'static' | 'static+cuda-graph' {
    return !this.staticCache ? 'dynamic' : this.staticCache.graphs ? 'static+cuda-graph' : 'static';
  }

  /** SCAP counters the graph reports (portable pruned models): host outputs a static-cache run asks for. */
  private get scapOutputs(): string[] {
    return this.backend.outputNames.filter((n) => n.startsWith('scap_'));
  }

  private readonly scapCounts = new Map<string, { kept: number; total: number }>();

  /** One run; caches stay on the device where the backend can keep them there. */
  private async run(feeds: Record<string, Value>, deviceOutputs: readonly string[] = []): Promise<Record<string, Value>> {
    return this.count(await this.backend.run(feeds, [...this.cacheOutputs, ...deviceOutputs]));
  }

  /** Adds a run's SCAP counters to the model's. */
  private count(out: Record<string, Value>): Record<string, Value> {
    for (const [name, v] of Object.entries(out)) {
      if (!name.startsWith('scap_kept.') || isDeviceValue(v)) continue;
      const site = name.slice('scap_kept.'.length);
      const total = out[`scap_total.${site}`];
      if (!total || isDeviceValue(total)) continue;
      const c = this.scapCounts.get(site) ?? { kept: 0, total: 0 };
      c.kept += (v.data as Float32Array)[0]!;
      c.total += (total.data as Float32Array)[0]!;
      this.scapCounts.set(site, c);
    }
    return out;
  }

  scapStats(): Map<string, { kept: number; total: number }> {
    return new Map([...this.scapCounts].map(([k, v]) => [k, { ...v }]));
  }

  resetScapStats(): void {
    this.scapCounts.clear();
  }

  private checkIds(ids: number[][]): void {
    if (!Array.isArray(ids) || ids.length === 0) throw new HubmoeError('BAD_ARGUMENT', 'expected a non-empty batch of token id rows');
    const V = this.spec.vocab.padded_size;
    ids.forEach((row, r) => {
      if (!Array.isArray(row) || row.length === 0) throw new HubmoeError('BAD_ARGUMENT', `row ${r} is empty; every row needs at least one token`);
      row.forEach((t, i) => {
        if (!Number.isInteger(t) || t < 0 || t >= V) {
          throw new HubmoeError('BAD_TOKEN_ID', `token ${JSON.stringify(t)} at row ${r}, position ${i} is not a valid id (the model has ${V} token ids: 0…${V - 1})`);
        }
      });
    });
  }

  /** Left-pads rows to one length; returns ids, mask and the common length. */
  private pad(ids: number[][], mask?: number[][]): { ids: BigInt64Array; mask: BigInt64Array; T: number } {
    const T = Math.max(...ids.map((r) => r.length));
    const B = ids.length;
    const outIds = new BigInt64Array(B * T).fill(BigInt(this.padId));
    const outMask = new BigInt64Array(B * T);
    ids.forEach((row, r) => {
      const off = T - row.length;
      const m = mask?.[r];
      if (m && m.length !== row.length) throw new HubmoeError('BAD_ARGUMENT', `attention mask row ${r} has ${m.length} entries for ${row.length} tokens`);
      row.forEach((t, i) => {
        outIds[r * T + off + i] = BigInt(t);
        outMask[r * T + off + i] = m ? BigInt(m[i] ? 1 : 0) : 1n;
      });
    });
    return { ids: outIds, mask: outMask, T };
  }

  private emptyCaches(B: number): Record<string, Value> {
    const feeds: Record<string, Value> = {};
    for (const name of this.cacheInputs) {
      const shape = this.backend.inputShape(name).map((d) => (typeof d === 'number' ? d : d === 'batch_size' ? B : 0));
      const n = shape.reduce((a, b) => a * b, 1);
      feeds[name] = this.backend.inputType(name) === 'float16' ? new Tensor('float16', new Uint16Array(n), shape) : new Tensor('float32', new Float32Array(n), shape);
    }
    return feeds;
  }

  private nextCaches(out: Record<string, Value>): Record<string, Value> {
    const feeds: Record<string, Value> = {};
    this.cacheInputs.forEach((name, i) => {
      const t = out[this.cacheOutputs[i]!];
      if (!t) throw new HubmoeError('RUNTIME', `the model did not return ${this.cacheOutputs[i]}`);
      feeds[name] = t;
    });
    return feeds;
  }

  async forward(ids: number[][], options: ForwardOptions = {}): Promise<Logits> {
    const out = await this.forwardRun(ids, options.attentionMask, false);
    disposeAll(out);
    const logits = hostLogits(out);
    return { data: logits.data as Float32Array, dims: logits.dims as [number, number, number] };
  }

  /** A forward over whole rows; with `deviceLogits` (native backend) the logits stay a device value. */
  private async forwardRun(ids: number[][], attentionMask: ForwardOptions['attentionMask'], deviceLogits: boolean): Promise<Record<string, Value>> {
    this.checkIds(ids);
    const B = ids.length;
    const { ids: flat, mask, T } = this.pad(ids, attentionMask);
    const device = deviceLogits && this.backend.name === 'native';
    return this.staticCache
      ? this.count(await this.staticCache.forward(flat, mask, B, T, this.scapOutputs, device))
      : await this.run(
          {
            input_ids: new Tensor('int64', flat, [B, T]),
            attention_mask: new Tensor('int64', mask, [B, T]),
            ...this.emptyCaches(B),
          },
          device ? ['logits'] : [],
        );
  }

  async generate(prompts: number[][], options: GenerateOptions = {}): Promise<GenerateResult> {
    this.checkIds(prompts);
    validateSampling(options);
    const maxNew = options.maxNewTokens ?? 20;
    if (!Number.isInteger(maxNew) || maxNew < 1) throw new HubmoeError('BAD_ARGUMENT', `max new tokens must be a positive integer (got ${maxNew})`);
    const eos = new Set(options.ignoreEos ? [] : (options.eosTokenIds ?? this.spec.vocab.eos));
    const stops = (options.stopSequences ?? []).filter((s) => s.length > 0);
    const rng = makeRng(options.seed ?? (isSampling(options) ? Math.floor(Math.random() * 2 ** 32) : 0));
    const B = prompts.length;
    const V = this.spec.vocab.padded_size;
    const { ids, mask: prefillMask, T } = this.pad(prompts);
    const tokens: number[][] = prompts.map(() => []);
    const reasons: FinishReason[] = prompts.map(() => 'length');
    const done = prompts.map(() => false);
    const stepLogits: Float32Array[] = [];
    const penalised = options.repetitionPenalty !== undefined && options.repetitionPenalty !== 1;
    /** Picks each unfinished row's token from the logits at `pos` of a [B, seqLen, V] output. */
    const chooseNext = (logits: Float32Array, seqLen: number, pos: number, step: number): number[] => {
      if (options.outputLogits) {
        const rows = new Float32Array(B * V);
        for (let r = 0; r < B; r++) rows.set(logits.subarray((r * seqLen + pos) * V, (r * seqLen + pos + 1) * V), r * V);
        stepLogits.push(rows);
      }
      return prompts.map((prompt, r) => {
        if (done[r]) return this.padId;
        // The output buffer is ours: pickToken may edit the row in place.
        const row = logits.subarray((r * seqLen + pos) * V, (r * seqLen + pos + 1) * V);
        return record(r, pickToken(row, this.spec.vocab.size, penalised ? [...prompt, ...tokens[r]!] : [], options, rng), step);
      });
    };
    /** Records row r's token of this step: onToken, EOS and stop sequences. */
    const record = (r: number, tok: number, step: number): number => {
      tokens[r]!.push(tok);
      const stopHere = options.onToken?.({ row: r, token: tok, step }) === true;
      if (eos.has(tok)) {
        done[r] = true;
        reasons[r] = 'eos';
      } else if (stopHere || stops.some((seq) => endsWith(tokens[r]!, seq))) {
        done[r] = true;
        reasons[r] = 'stop';
      }
      return tok;
    };
    // Greedy decoding without logits to return or edit can take the graph's own choice (fused static-cache graphs).
    const deviceGreedy = !isSampling(options) && !penalised && !options.outputLogits;
    if (this.staticCache) {
      const { out: first, last, stream } = await this.staticCache.begin(ids, prefillMask, B, T, maxNew, this.scapOutputs);
      try {
        this.count(first);
        disposeAll(first);
        let next = chooseNext(last, 1, 0, 0);
        if (deviceGreedy && this.decodeLoop && stream.greedy) {
          // The addon runs the steps, a chunk at a time; the tokens are recorded here as the step loop below would.
          // A row that onToken or a stop sequence ends is fed its own tokens (not the pad id) until the chunk ends:
          // no other row reads them.
          const stopIds = [...eos];
          let chunk = DECODE_FIRST_CHUNK;
          for (let step = 1; step < maxNew && !done.every(Boolean); ) {
            const t0 = performance.now();
            const steps = await stream.greedy(next, done, Math.min(chunk, maxNew - step), stopIds, this.padId);
            chunk = decodeChunk((performance.now() - t0) / steps.length);
            for (const chosen of steps) {
              if (done.every(Boolean)) break;
              next = chosen.map((tok, r) => (done[r] ? this.padId : record(r, tok, step)));
              step++;
            }
          }
          return { tokens, finishReasons: reasons };
        }
        for (let step = 1; step < maxNew && !done.every(Boolean); step++) {
          const result = await stream.step(next);
          const chosen = deviceGreedy ? result.tokens() : undefined;
          next = chosen ? chosen.map((tok, r) => (done[r] ? this.padId : record(r, tok, step))) : chooseNext(result.logits(), 1, 0, step);
        }
      } finally {
        stream.end();
      }
      return { tokens, finishReasons: reasons, ...(options.outputLogits ? { logits: stepLogits } : {}) };
    }
    let mask = prefillMask;
    let total = T;
    // The native backend leaves the prefill's logits on the device: only the last position's are copied.
    let out = await this.run(
      {
        input_ids: new Tensor('int64', ids, [B, T]),
        attention_mask: new Tensor('int64', prefillMask, [B, T]),
        ...this.emptyCaches(B),
      },
      this.backend.name === 'native' ? ['logits'] : [],
    );
    try {
      let next = chooseNext(lastLogits(out, B, T, V), 1, 0, 0);
      for (let step = 1; step < maxNew && !done.every(Boolean); step++) {
        // Each row's mask grows by one attended position (a copy per row, no per-element conversion).
        const grown = new BigInt64Array(B * (total + 1));
        for (let r = 0; r < B; r++) {
          grown.set(mask.subarray(r * total, (r + 1) * total), r * (total + 1));
          grown[r * (total + 1) + total] = 1n;
        }
        mask = grown;
        total += 1;
        const previous = out;
        out = await this.run({
          input_ids: new Tensor('int64', BigInt64Array.from(next, (t) => BigInt(t)), [B, 1]),
          attention_mask: new Tensor('int64', mask, [B, total]),
          ...this.nextCaches(previous),
        });
        disposeAll(previous);
        next = chooseNext(hostLogits(out).data as Float32Array, 1, 0, step);
      }
    } finally {
      disposeAll(out);
    }
    return { tokens, finishReasons: reasons, ...(options.outputLogits ? { logits: stepLogits } : {}) };
  }

  async generateText(prompts: string | string[], options: TextGenerateOptions = {}): Promise<string[]> {
    const tok = this.tokenizer;
    if (!tok) throw new HubmoeError('NOT_FOUND', `${this.dir}: the model dir has no tokenizer.json; pass token ids to generate() instead`);
    const texts = Array.isArray(prompts) ? prompts : [prompts];
    const ids = texts.map((t) => tok.encode(t, options.addSpecialTokens ?? true));
    const emitted = texts.map(() => '');
    const stopped = texts.map(() => false);
    const stop = (options.stop ?? []).filter((s) => s.length > 0);
    const generated: number[][] = texts.map(() => []);
    const decoders = texts.map(() => new IncrementalDecoder(tok));
    const cut = (text: string): { text: string; hit: boolean } => {
      let at = -1;
      for (const s of stop) {
        const i = text.indexOf(s);
        if (i >= 0 && (at < 0 || i < at)) at = i;
      }
      return at >= 0 ? { text: text.slice(0, at), hit: true } : { text, hit: false };
    };
    await this.generate(ids, {
      ...options,
      onToken: ({ row, token }) => {
        if (stopped[row]) return;
        generated[row]!.push(token);
        // The decoder releases no incomplete UTF-8 sequence; hold back a possible partial stop string too.
        const full = cut(decoders[row]!.push(token));
        const hold = full.hit ? 0 : Math.max(0, ...stop.map((s) => s.length - 1));
        const safe = full.text;
        const upto = Math.max(emitted[row]!.length, safe.length - hold);
        if (upto > emitted[row]!.length) {
          options.onText?.(row, safe.slice(emitted[row]!.length, upto));
          emitted[row] = safe.slice(0, upto);
        }
        if (full.hit) stopped[row] = true;
        return full.hit;
      },
    });
    return generated.map((g, r) => {
      const final = cut(tok.decode(g)).text;
      if (final.length > emitted[r]!.length && final.startsWith(emitted[r]!)) options.onText?.(r, final.slice(emitted[r]!.length));
      return final;
    });
  }

  async perplexity(ids: readonly number[], options: PerplexityOptions = {}): Promise<PerplexityResult> {
    const W = options.window ?? 256;
    const batch = options.batch ?? 8;
    if (!Number.isInteger(W) || W < 1) throw new HubmoeError('BAD_ARGUMENT', `window must be a positive integer (got ${W})`);
    const windows = Math.floor((ids.length - 1) / W);
    if (windows < 1) throw new HubmoeError('BAD_ARGUMENT', `perplexity needs more than ${W} tokens (got ${ids.length})`);
    let nll = 0;
    for (let w0 = 0; w0 < windows; w0 += batch) {
      const rows: number[][] = [];
      for (let w = w0; w < Math.min(windows, w0 + batch); w++) rows.push(ids.slice(w * W, (w + 1) * W));
      const targets = new BigInt64Array(rows.length * W);
      for (let r = 0; r < rows.length; r++) for (let t = 0; t < W; t++) targets[r * W + t] = BigInt(ids[(w0 + r) * W + t + 1]!);
      nll += await this.windowNll(rows, targets);
      options.onProgress?.(Math.min(windows, w0 + batch), windows);
    }
    const tokens = windows * W;
    return { perplexity: Math.exp(nll / tokens), nll: nll / tokens, tokens };
  }

  private nll?: Promise<NllScorer | undefined>;

  /** Σ −log p(target) over rows of windows: in ONNX Runtime beside the model (runtime/nll.ts), else in JavaScript. */
  private async windowNll(rows: number[][], targets: BigInt64Array): Promise<number> {
    const B = rows.length;
    const W = rows[0]!.length;
    // HUBMOE_NLL=js: always the JavaScript path (for comparisons, and a way around a device the graph fails on).
    this.nll ??= this.nllOptions && process.env.HUBMOE_NLL !== 'js'
      ? NllScorer.create(this.nllOptions).catch((err: unknown) => {
          process.emitWarning(`hubmoe: perplexity falls back to JavaScript (the NLL graph did not load: ${(err as Error).message})`);
          return undefined;
        })
      : Promise.resolve(undefined);
    const scorer = await this.nll;
    if (scorer) {
      const out = await this.forwardRun(rows, undefined, true);
      try {
        return await scorer.sum(out.logits!, targets, B, W);
      } catch (err) {
        process.emitWarning(`hubmoe: perplexity falls back to JavaScript (the NLL graph failed: ${(err as Error).message})`);
        this.nll = Promise.resolve(undefined);
        await scorer.release().catch(() => {});
      } finally {
        disposeAll(out);
      }
    }
    const { data } = await this.forward(rows);
    const V = this.spec.vocab.padded_size;
    let nll = 0;
    for (let i = 0; i < B * W; i++) {
      const off = i * V;
      let max = -Infinity;
      for (let v = 0; v < V; v++) max = Math.max(max, data[off + v]!);
      let sum = 0;
      for (let v = 0; v < V; v++) sum += Math.exp(data[off + v]! - max);
      nll += Math.log(sum) + max - data[off + Number(targets[i]!)]!;
    }
    return nll;
  }

  async dispose(): Promise<void> {
    const scorer = await this.nll;
    this.nll = undefined;
    await scorer?.release();
    this.staticCache?.dispose();
    await this.backend.release();
  }
}

function hostLogits(out: Record<string, Value>): HostValue {
  const l = out.logits;
  if (!l || isDeviceValue(l)) throw new HubmoeError('RUNTIME', 'the model returned no host logits');
  return l;
}

/** Frees the device values of a run's outputs (cache values on the native backend). */
function disposeAll(out: Record<string, Value>): void {
  for (const v of Object.values(out)) if (isDeviceValue(v)) v.dispose();
}

function endsWith(seq: readonly number[], tail: readonly number[]): boolean {
  if (tail.length > seq.length) return false;
  for (let i = 0; i < tail.length; i++) if (seq[seq.length - tail.length + i] !== tail[i]) return false;
  return true;
}
