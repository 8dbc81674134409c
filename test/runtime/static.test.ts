/**
 * The static-cache graph (onnx/<name>_static.onnx) and its runner (runtime/static.ts): the same logits and tokens
 * as the dynamic graph for every family, target and backend that runs on the CPU; windows kept per batch size and
 * reused, caches alternating between two buffer sets under alternating CUDA-graph ids (checked here with a backend
 * that records the ids it is given); the export sharing one copy of the weights.
 */
import { readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { convert } from '../../src/convert.js';
import { HubmoeError } from '../../src/errors.js';
import { GraphBuilder } from '../../src/onnx/graph.js';
import { writeOnnxSharing } from '../../src/onnx/export.js';
import { createBackend, customOpsLibrary } from '../../runtime/backend.js';
import type { InferenceBackend } from '../../runtime/backend.js';
import { DECODE_FIRST_CHUNK, decodeChunk, graphChoice, loadModel } from '../../runtime/model.js';
import { loadNative } from '../../runtime/native/index.js';
import type { NativeGreedyTiming } from '../../runtime/native/index.js';
import { StaticCache, windowSlots } from '../../runtime/static.js';
import { loadSpec } from '../../src/schema/load.js';
import { argmax } from '../../runtime/sampling.js';
import { fixture, tempDir } from '../helpers.js';
import { existsSync } from 'node:fs';

const native = loadNative();
const fusedOk = Boolean(native) && existsSync(customOpsLibrary('cpu'));
const skipNative = !native && !process.env.CI;

function maxRel(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let d = 0;
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    d = Math.max(d, Math.abs(a[i]! - b[i]!));
    m = Math.max(m, Math.abs(b[i]!));
  }
  return d / m;
}

// Ragged rows (left-padded), so that the window's mask carries padding as well as unwritten slots.
const PROMPTS = [
  [1, 5, 9, 22, 7],
  [3, 4],
];

describe('the static-cache graph', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await tempDir('hubmoe-static-');
  });
  afterAll(async () => rm(dir, { recursive: true, force: true }));

  const cases: Array<{ fixture: string; target: 'portable' | 'fused'; backend: 'onnxruntime-node' | 'native' }> = [
    { fixture: 'jamba-odd', target: 'portable', backend: 'onnxruntime-node' },
    { fixture: 'jamba-odd', target: 'portable', backend: 'native' },
    { fixture: 'jamba-demo', target: 'fused', backend: 'native' },
    { fixture: 'blackmamba-glu-bias', target: 'fused', backend: 'native' },
    { fixture: 'moe-mamba', target: 'portable', backend: 'onnxruntime-node' },
    { fixture: 'mamba-hf', target: 'fused', backend: 'native' },
  ];
  for (const c of cases) {
    const skip = c.backend === 'native' && (skipNative || (c.target === 'fused' && !fusedOk && !process.env.CI));
    it.skipIf(skip)(`${c.fixture}, ${c.target} target, ${c.backend}: generates and scores as the dynamic graph does`, async () => {
      const out = join(dir, `${c.fixture}-${c.target}`);
      if (!existsSync(join(out, 'hubmoe.json'))) await convert(fixture(c.fixture, 'checkpoint'), { outDir: out, target: c.target });
      const dynamic = await loadModel(out, { backend: c.backend, threads: 1 });
      const fixed = await loadModel(out, { backend: c.backend, threads: 1, staticCache: true });
      try {
        expect(dynamic.graph).toBe('dynamic');
        expect(fixed.graph).toBe('static');
        const opts = { maxNewTokens: 6, ignoreEos: true, outputLogits: true };
        const a = await dynamic.generate(PROMPTS, opts);
        const b = await fixed.generate(PROMPTS, opts);
        expect(b.tokens).toEqual(a.tokens);
        a.logits!.forEach((l, i) => expect(maxRel(b.logits![i]!, l)).toBeLessThan(1e-5));
        if (c.target === 'fused') {
          // Greedy decoding without logits asked for takes each step's tokens from the graph's next_token output.
          const g = await fixed.generate(PROMPTS, { maxNewTokens: 6, ignoreEos: true });
          expect(g.tokens).toEqual(a.tokens);
        }
        const fa = await dynamic.forward(PROMPTS);
        const fb = await fixed.forward(PROMPTS);
        expect(fb.dims).toEqual(fa.dims);
        expect(maxRel(fb.data, fa.data)).toBeLessThan(1e-5);
      } finally {
        await dynamic.dispose();
        await fixed.dispose();
      }
    });
  }

  it.skipIf(skipNative || (!fusedOk && !process.env.CI))('the fused graph chooses each step\'s greedy token on the device (next_token); the portable one leaves it to the host', async () => {
    const out = join(dir, 'jamba-demo-fused');
    if (!existsSync(join(out, 'hubmoe.json'))) await convert(fixture('jamba-demo', 'checkpoint'), { outDir: out, target: 'fused' });
    const backend = await createBackend(join(out, 'onnx', 'model_static.onnx'), { device: 'cpu', backend: 'native', threads: 1, customOps: true });
    const model = await loadModel(out, { threads: 1 });
    try {
      expect(backend.outputNames).toContain('next_token');
      const vocab = model.spec.vocab.size;
      const V = model.spec.vocab.padded_size;
      const cache = new StaticCache(backend, { maxLength: 64, vocab: V });
      expect(cache.nextToken).toBe(true);
      const ids = BigInt64Array.from([1n, 5n, 9n, 22n, 7n, 0n, 0n, 3n, 4n, 8n]);
      const mask = BigInt64Array.from([1n, 1n, 1n, 1n, 1n, 0n, 0n, 1n, 1n, 1n]);
      const { stream } = await cache.begin(ids, mask, 2, 5, 8, []);
      try {
        let next = [11, 12];
        for (let s = 0; s < 6; s++) {
          const r = await stream.step(next);
          const l = r.logits();
          const host = [0, 1].map((b) => argmax(l.subarray(b * V, b * V + vocab)));
          expect(r.tokens()).toEqual(host);
          next = host;
        }
      } finally {
        stream.end();
        cache.dispose();
      }
    } finally {
      await backend.release();
      await model.dispose();
    }
    const portable = join(dir, 'jamba-odd-portable-nt');
    await convert(fixture('jamba-odd', 'checkpoint'), { outDir: portable });
    const pb = await createBackend(join(portable, 'onnx', 'model_static.onnx'), { device: 'cpu', backend: 'native', threads: 1 });
    try {
      expect(pb.outputNames).not.toContain('next_token');
      expect(new StaticCache(pb, { maxLength: 16, vocab: 1 }).nextToken).toBe(false);
    } finally {
      await pb.release();
    }
  });

  it.skipIf(skipNative || (!fusedOk && !process.env.CI))('runs greedy decode steps in the addon (stream.greedy) as the step loop does: tokens, pad feeds, early stop, errors', async () => {
    const out = join(dir, 'jamba-demo-fused');
    if (!existsSync(join(out, 'hubmoe.json'))) await convert(fixture('jamba-demo', 'checkpoint'), { outDir: out, target: 'fused' });
    const backend = await createBackend(join(out, 'onnx', 'model_static.onnx'), { device: 'cpu', backend: 'native', threads: 1, customOps: true });
    const cache = new StaticCache(backend, { maxLength: 64, vocab: (await loadSpec(out)).vocab.padded_size });
    const ids = BigInt64Array.from([1n, 5n, 9n, 22n, 7n, 0n, 0n, 3n, 4n, 8n]);
    const mask = BigInt64Array.from([1n, 1n, 1n, 1n, 1n, 0n, 0n, 1n, 1n, 1n]);
    const PAD = 0;
    /** The step loop of runtime/model.ts: a row finished before a step is fed the pad id. */
    const stepLoop = async (steps: number, stop: number[], done0: boolean[]): Promise<number[][]> => {
      const { stream } = await cache.begin(ids, mask, 2, 5, 16, []);
      try {
        const done = [...done0];
        let next = [11, 12];
        const got: number[][] = [];
        for (let s = 0; s < steps && !done.every(Boolean); s++) {
          const toks = (await stream.step(next)).tokens()!;
          got.push(toks);
          next = toks.map((t, r) => (done[r] ? PAD : t));
          toks.forEach((t, r) => (done[r] = done[r] || stop.includes(t)));
        }
        return got;
      } finally {
        stream.end();
      }
    };
    try {
      const plain = await stepLoop(9, [], [false, false]);
      // A stop id that row 0 produces at its third step and row 1 never does; and one finishing both rows.
      const stopOne = plain[2]![0]!;
      expect(plain.map((t) => t[1])).not.toContain(stopOne);
      const stopBoth = [stopOne, ...plain.slice(0, 4).map((t) => t[1]!)];
      for (const [stop, done0] of [
        [[], [false, false]],
        [[stopOne], [false, false]],
        [stopBoth, [false, false]],
        [[], [true, false]],
      ] as Array<[number[], boolean[]]>) {
        const want = await stepLoop(9, stop, done0);
        const { stream } = await cache.begin(ids, mask, 2, 5, 16, []);
        try {
          expect(stream.greedy).toBeDefined();
          // Two calls (4 + 5 steps), the second going on from the first's state, tokens and finished rows.
          const a = await stream.greedy!([11, 12], done0, 4, stop, PAD);
          const done = [...done0];
          a.forEach((toks) => toks.forEach((t, r) => (done[r] = done[r] || stop.includes(t))));
          const last = a[a.length - 1]!;
          const b = a.length < 4 ? [] : await stream.greedy!(last.map((t, r) => (done[r] && !stop.includes(t) ? PAD : t)), done, 5, stop, PAD);
          expect([...a, ...b]).toEqual(want);
          // The addon's clock of the last call: its steps, and where their time went.
          const t = (backend as unknown as { lastGreedyTiming?: NativeGreedyTiming }).lastGreedyTiming!;
          expect(t.steps).toBe(b.length || a.length);
          for (const k of ['wait', 'handOver', 'write', 'run', 'sync', 'read', 'handBack', 'settle'] as const) expect(t[k]).toBeGreaterThanOrEqual(0);
          expect(t.run).toBeGreaterThan(0);
        } finally {
          stream.end();
        }
      }
      expect((await stepLoop(9, stopBoth, [false, false])).length).toBeLessThan(9);
      // Bad arguments of the addon's call, each named before anything runs.
      const alloc = (dims: number[]): ReturnType<NonNullable<typeof backend.allocate>> => backend.allocate!('int64', dims);
      const v = { ids: alloc([2, 1]), mask: alloc([2, 8]), pos: alloc([1]), next: alloc([2]) };
      const good = {
        steps: 2,
        feeds: [{ input_ids: v.ids }, { input_ids: v.ids }] as [Record<string, typeof v.ids>, Record<string, typeof v.ids>],
        bind: [{ next_token: v.next }, { next_token: v.next }] as [Record<string, typeof v.ids>, Record<string, typeof v.ids>],
        first: 0 as const,
        ...v,
        tokens: BigInt64Array.of(1n, 2n),
        slot: 0,
        done: new Uint8Array(2),
        stop: new BigInt64Array(0),
        pad: 0,
      };
      const bad: Array<[Record<string, unknown>, RegExp]> = [
        [{ tokens: [1, 2] }, /tokens must be a BigInt64Array/],
        [{ done: new Uint8Array(3) }, /done must be a Uint8Array of one flag per row \(2\)/],
        [{ mask: alloc([3, 8]) }, /mask must be an int64 value of dims \[2, window\]/],
        [{ next: alloc([3]) }, /next must be an int64 value of 2 elements/],
        [{ steps: 9 }, /9 steps from slot 0 do not fit the window of 8 slots/],
        [{ steps: 0 }, /steps must be an integer from 1/],
        [{ graphIds: [1, 2] }, /enable_cuda_graph/],
        [{ feeds: [{ nope: v.ids }, {}] }, /the model has no input 'nope'/],
        [{ bind: [{ logits: alloc([2]) }, { next_token: v.next }] }, /bind\[0\] must bind an output to `next`/],
      ];
      for (const [change, msg] of bad) {
        await expect(backend.greedySteps!({ ...good, ...change } as Parameters<NonNullable<typeof backend.greedySteps>>[0])).rejects.toMatchObject({ code: 'BAD_ARGUMENT', message: expect.stringMatching(msg) });
      }
      for (const x of Object.values(v)) x.dispose();
      // The window is checked before anything runs.
      const { stream } = await cache.begin(ids, mask, 2, 5, 4, []);
      try {
        await expect(stream.greedy!([11, 12], [false, false], 300, [], PAD)).rejects.toThrow(/window of \d+ slots is full/);
      } finally {
        stream.end();
      }
    } finally {
      cache.dispose();
      await backend.release();
    }
  });

  it('sizes the addon\'s greedy calls to about 100 ms of steps: 1 to 256 steps', () => {
    expect(DECODE_FIRST_CHUNK).toBe(4);
    expect([2, 1.3, 0.39, 0.3, 33, 100, 250].map(decodeChunk)).toEqual([50, 76, 256, 256, 3, 1, 1]);
    expect([0, -1, Number.NaN].map(decodeChunk)).toEqual([256, 256, 256]);
  });

  it.skipIf(skipNative || (!fusedOk && !process.env.CI))('generate(): the decode loop in the addon gives the step loop\'s tokens and finish reasons (eos, stop sequences, onToken)', async () => {
    const out = join(dir, 'jamba-demo-fused');
    if (!existsSync(join(out, 'hubmoe.json'))) await convert(fixture('jamba-demo', 'checkpoint'), { outDir: out, target: 'fused' });
    const loop = await loadModel(out, { threads: 1, staticCache: true });
    const steps = await loadModel(out, { threads: 1, staticCache: true, decodeLoop: false });
    try {
      const base = await steps.generate(PROMPTS, { maxNewTokens: 14, ignoreEos: true });
      const r0 = base.tokens[0]!;
      const r1 = base.tokens[1]!;
      const eos = r0.find((t, i) => i >= 3 && !r1.slice(0, i + 1).includes(t) && !r0.slice(0, i).includes(t));
      expect(eos).toBeDefined();
      const cases: Array<Parameters<typeof loop.generate>[1]> = [
        { maxNewTokens: 14, ignoreEos: true },
        { maxNewTokens: 1, ignoreEos: true },
        { maxNewTokens: 14, eosTokenIds: [eos!] },
        { maxNewTokens: 14, eosTokenIds: [eos!, ...r1.slice(1, 4)] },
        { maxNewTokens: 14, ignoreEos: true, stopSequences: [r1.slice(4, 6)] },
        { maxNewTokens: 14, ignoreEos: true, onToken: ({ row, step }) => row === 1 && step === 6 },
      ];
      for (const opts of cases) {
        const events: string[][] = [[], []];
        const record = (into: string[]) => (e: { row: number; token: number; step: number }) => {
          into.push(`${e.row}:${e.step}:${e.token}`);
          return opts?.onToken?.(e);
        };
        const want = await steps.generate(PROMPTS, { ...opts, onToken: record(events[0]!) });
        const got = await loop.generate(PROMPTS, { ...opts, onToken: record(events[1]!) });
        expect(got).toEqual(want);
        expect(events[1]).toEqual(events[0]);
      }
      // eos finishing row 0 early: the reasons differ per row.
      const e = await loop.generate(PROMPTS, { maxNewTokens: 14, eosTokenIds: [eos!] });
      expect(e.finishReasons).toEqual(['eos', 'length']);
    } finally {
      await loop.dispose();
      await steps.dispose();
    }
  });

  it('is written next to each dynamic graph and reads that graph\'s external data', async () => {
    const out = join(dir, 'jamba-demo-both');
    const res = await convert(fixture('jamba-demo', 'checkpoint'), { outDir: out, dtype: 'both' });
    expect(res.files).toEqual(expect.arrayContaining(['onnx/model_static.onnx', 'onnx/model_fp16_static.onnx']));
    expect(existsSync(join(out, 'onnx', 'model_static.onnx_data'))).toBe(false);
    const graph = await readFile(join(out, 'onnx', 'model_static.onnx'));
    expect(graph.includes(Buffer.from('model.onnx_data'))).toBe(true);
    expect(graph.includes(Buffer.from('cache_position'))).toBe(true);
    // The graph itself is small: the weights stay in model.onnx_data, once.
    expect((await stat(join(out, 'onnx', 'model_static.onnx'))).size).toBeLessThan((await stat(join(out, 'onnx', 'model.onnx_data'))).size / 4);
    const fp16 = await readFile(join(out, 'onnx', 'model_fp16_static.onnx'));
    expect(fp16.includes(Buffer.from('model_fp16.onnx_data'))).toBe(true);
  });

  it('refuses to share external data between graphs whose weights differ', async () => {
    const a = new GraphBuilder('fp32');
    const b = new GraphBuilder('fp32');
    const part = { elements: 4, read: async () => new Float32Array(4) };
    a.weight('w', [2, 2], [part]);
    b.weight('w', [4, 1], [part]);
    await expect(writeOnnxSharing(b, a, dir, 'x_static', 'x', { producerVersion: '0' })).rejects.toThrow(/differ from x\.onnx's/);
  });

  it('a model dir without it: staticCache is refused with a clear error', async () => {
    const out = join(dir, 'jamba-odd-portable');
    if (!existsSync(join(out, 'hubmoe.json'))) await convert(fixture('jamba-odd', 'checkpoint'), { outDir: out });
    await rm(join(out, 'onnx', 'model_static.onnx'));
    const err = await loadModel(out, { staticCache: true }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(HubmoeError);
    expect((err as HubmoeError).code).toBe('NOT_FOUND');
    expect((err as HubmoeError).message).toMatch(/model_static\.onnx is missing.*reconvert/);
    const m = await loadModel(out);
    expect(m.graph).toBe('dynamic');
    await m.dispose();
    await expect(loadModel(out, { maxLength: 1 })).rejects.toMatchObject({ code: 'BAD_ARGUMENT' });
    expect(['auto', 'dynamic', 'static', 'cuda-graph'].map((g) => graphChoice(g))).toEqual([
      {},
      { staticCache: false },
      { staticCache: true, cudaGraph: false },
      { staticCache: true, cudaGraph: true },
    ]);
    expect(() => graphChoice('fast')).toThrow(HubmoeError);
    await expect(loadModel(out, { cudaGraph: true })).rejects.toMatchObject({ code: 'BAD_ARGUMENT', message: expect.stringMatching(/device 'cuda' and the native backend/) });
    await expect(loadModel(out, { device: 'cuda', backend: 'onnxruntime-node', cudaGraph: true })).rejects.toMatchObject({ code: 'BAD_ARGUMENT' });
  });
});

/**
 * Window reuse and CUDA-graph ids on the CPU: the native backend's static session wrapped so that it claims CUDA
 * graphs (the runner then keeps one window per batch size and alternates graph ids) and records the ids, which a
 * CPU session cannot take, instead of passing them on.
 */
describe.skipIf(skipNative)('static windows and graph ids', () => {
  let dir: string;
  let inner: InferenceBackend;
  let reference: Awaited<ReturnType<typeof loadModel>>;
  const ids: Array<number | undefined> = [];
  let wrapped: InferenceBackend;
  let V = 0;

  beforeAll(async () => {
    dir = await tempDir('hubmoe-static-graph-');
    await convert(fixture('jamba-odd', 'checkpoint'), { outDir: join(dir, 'm') });
    inner = await createBackend(join(dir, 'm', 'onnx', 'model_static.onnx'), { device: 'cpu', backend: 'native', threads: 1 });
    reference = await loadModel(join(dir, 'm'), { threads: 1 });
    V = reference.spec.vocab.padded_size;
    wrapped = {
      name: inner.name,
      device: inner.device,
      inputNames: inner.inputNames,
      outputNames: inner.outputNames,
      inputShape: (n) => inner.inputShape(n),
      inputType: (n) => inner.inputType(n),
      run: (f, d) => inner.run(f, d),
      allocate: (t, d) => inner.allocate!(t, d),
      runBound: (f, b, o, g, d) => {
        ids.push(g);
        return inner.runBound!(f, b, o, undefined, d);
      },
      cudaGraph: true,
      release: () => inner.release(),
    };
  });
  afterAll(async () => {
    await inner?.release();
    await reference?.dispose();
    await rm(dir, { recursive: true, force: true });
  });

  /** Greedy decoding through the runner: each step's logits and tokens. */
  async function greedy(cache: StaticCache, rows: number[][], steps: number): Promise<{ tokens: number[][]; logits: Float32Array[] }> {
    const B = rows.length;
    const T = Math.max(...rows.map((r) => r.length));
    const flat = new BigInt64Array(B * T);
    const mask = new BigInt64Array(B * T);
    rows.forEach((r, b) => r.forEach((t, i) => ((flat[b * T + T - r.length + i] = BigInt(t)), (mask[b * T + T - r.length + i] = 1n))));
    const { last, stream } = await cache.begin(flat, mask, B, T, steps, []);
    const argmax = (l: Float32Array, off: number): number => {
      let best = 0;
      for (let v = 1; v < V; v++) if (l[off + v]! > l[off + best]!) best = v;
      return best;
    };
    let next = rows.map((_, b) => argmax(last, b * V));
    const tokens = rows.map((_, b) => [next[b]!]);
    const logits: Float32Array[] = [];
    try {
      for (let s = 1; s < steps; s++) {
        const l = (await stream.step(next)).logits();
        logits.push(l);
        next = rows.map((_, b) => argmax(l, b * V));
        next.forEach((t, b) => tokens[b]!.push(t));
      }
    } finally {
      stream.end();
    }
    return { tokens, logits };
  }

  it('keeps a window per batch size, alternates two graph ids over it, and repeats itself on reuse', async () => {
    const cache = new StaticCache(wrapped, { maxLength: 32, vocab: V });
    expect(cache.graphs).toBe(true);
    const want = await reference.generate(PROMPTS, { maxNewTokens: 5, ignoreEos: true, outputLogits: true });
    ids.length = 0;
    const first = await greedy(cache, PROMPTS, 5);
    expect(first.tokens).toEqual(want.tokens);
    first.logits.forEach((l, i) => expect(maxRel(l, want.logits![i + 1]!)).toBeLessThan(1e-5));
    // Prefill uncaptured; the steps alternate between reading set 1 (graph 2) and set 0 (graph 1).
    expect(ids).toEqual([-1, 2, 1, 2, 1]);
    ids.length = 0;
    const again = await greedy(cache, PROMPTS, 5);
    expect(again.tokens).toEqual(first.tokens);
    again.logits.forEach((l, i) => expect(l).toEqual(first.logits[i]));
    expect(ids).toEqual([-1, 2, 1, 2, 1]);
    // Another batch size: a window and two graphs of its own.
    ids.length = 0;
    const one = await greedy(cache, [PROMPTS[0]!], 3);
    expect(one.tokens[0]).toEqual(first.tokens[0]!.slice(0, 3));
    expect(ids).toEqual([-1, 4, 3]);
    expect(cache.keptWindows()).toEqual(['2x32', '1x32']);
    cache.dispose();
  });

  it('sizes kept windows to the generation (powers of two from 256) and frees the least recently used', async () => {
    expect([1, 256, 257, 600, 5000].map((n) => windowSlots(n, 4096))).toEqual([256, 256, 512, 1024, 4096]);
    const cache = new StaticCache(wrapped, { maxLength: 1024, vocab: V, maxWindows: 2 });
    const want = await reference.generate(PROMPTS, { maxNewTokens: 4, ignoreEos: true });
    const a = await greedy(cache, PROMPTS, 4); // 9 tokens: 256 slots
    expect(a.tokens).toEqual(want.tokens);
    await greedy(cache, [PROMPTS[1]!], 300); // 302 tokens: 512 slots
    expect(cache.keptWindows()).toEqual(['2x256', '1x512']);
    ids.length = 0;
    await greedy(cache, [PROMPTS[0]!], 2); // a third window: the least recently used (2x256) goes
    expect(cache.keptWindows()).toEqual(['1x512', '1x256']);
    ids.length = 0;
    const b = await greedy(cache, PROMPTS, 4); // 2x256 again: new buffers, new graph ids
    expect(b.tokens).toEqual(want.tokens);
    expect(ids[1]).toBeGreaterThan(6);
    cache.dispose();
  });

  it('runs a generation longer than the window, or one that finds the window busy, uncaptured in a window of its own', async () => {
    const cache = new StaticCache(wrapped, { maxLength: 8, vocab: V });
    const want = await reference.generate(PROMPTS, { maxNewTokens: 6, ignoreEos: true });
    ids.length = 0;
    const long = await greedy(cache, PROMPTS, 6); // 5 + 6 > 8 slots
    expect(long.tokens).toEqual(want.tokens);
    expect(ids.every((g) => g === undefined)).toBe(true);
    const short = await reference.generate(PROMPTS, { maxNewTokens: 3, ignoreEos: true });
    ids.length = 0;
    const [x, y] = await Promise.all([greedy(cache, PROMPTS, 3), greedy(cache, PROMPTS, 3)]);
    expect(x.tokens).toEqual(short.tokens);
    expect(y.tokens).toEqual(short.tokens);
    // One of the two had the kept window (graph ids), the other a window of its own (none).
    expect(ids.filter((g) => g !== undefined && g > 0)).toHaveLength(2);
    expect(ids.filter((g) => g === undefined)).toHaveLength(3);
    cache.dispose();
  });
});
