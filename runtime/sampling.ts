/**
 * Choosing the next token from logits, in the order transformers applies its processors:
 * repetition penalty, then (when sampling) temperature, top-k, top-p, then a draw. Ids at or past
 * the tokenizer's vocabulary (padding rows of the LM head) are never chosen.
 */
import { HubmoeError } from '../src/errors.js';

export interface SamplingOptions {
  /** Sample instead of taking the argmax; default: true when temperature > 0 is given. */
  doSample?: boolean;
  temperature?: number;
  topK?: number;
  topP?: number;
  /** > 1 discourages tokens already in the sequence (transformers' RepetitionPenaltyLogitsProcessor). */
  repetitionPenalty?: number;
  /** Seed of the sampler's random generator, for reproducible sampling. */
  seed?: number;
}

/** mulberry32: a small, fast, seedable generator. */
export function makeRng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function validateSampling(o: SamplingOptions): void {
  const bad = (msg: string): never => {
    throw new HubmoeError('BAD_ARGUMENT', msg);
  };
  if (o.temperature !== undefined && !(o.temperature >= 0 && Number.isFinite(o.temperature))) bad(`temperature must be ≥ 0 (got ${o.temperature})`);
  if (o.topK !== undefined && !(Number.isInteger(o.topK) && o.topK >= 0)) bad(`top-k must be a non-negative integer (got ${o.topK})`);
  if (o.topP !== undefined && !(o.topP > 0 && o.topP <= 1)) bad(`top-p must be in (0, 1] (got ${o.topP})`);
  if (o.repetitionPenalty !== undefined && !(o.repetitionPenalty > 0 && Number.isFinite(o.repetitionPenalty))) bad(`repetition penalty must be > 0 (got ${o.repetitionPenalty})`);
}

export function isSampling(o: SamplingOptions): boolean {
  if (o.doSample !== undefined) return o.doSample && (o.temperature ?? 1) > 0;
  return (o.temperature ?? 0) > 0;
}

/**
 * Picks the next token from one row of logits (`logits` is modified in place).
 * `history` is every token of the row so far (prompt and generated), for the repetition penalty.
 */
export function pickToken(logits: Float32Array, vocabSize: number, history: readonly number[], o: SamplingOptions, rng: () => number): number {
  for (let i = vocabSize; i < logits.length; i++) logits[i] = -Infinity;
  const penalty = o.repetitionPenalty ?? 1;
  if (penalty !== 1) {
    for (const id of new Set(history)) {
      if (id < 0 || id >= logits.length) continue;
      const v = logits[id]!;
      logits[id] = v < 0 ? v * penalty : v / penalty;
    }
  }
  if (!isSampling(o)) return argmax(logits);
  return sample(logits, Math.min(vocabSize, logits.length), o, rng);
}

/**
 * The draw: candidates (logits above −∞ among the first n) in order of logit, highest first, ties by id;
 * top-k keeps the first k and every token tied with the k-th; then softmax at the temperature, top-p keeps the
 * smallest prefix whose mass reaches p, and a uniform draw walks the kept tokens in that order. Only as much of
 * the order is computed as is used: a selection for top-k, otherwise a heap popped until the draw (or the top-p
 * prefix) is decided — a full sort of a 65536-token vocabulary took 20–27 ms per token.
 */
function sample(logits: Float32Array, n: number, o: SamplingOptions, rng: () => number): number {
  const temperature = o.temperature ?? 1;
  const cand = new Int32Array(n);
  let m = 0;
  let top = -Infinity;
  for (let i = 0; i < n; i++) {
    const v = logits[i]!;
    if (v > -Infinity) {
      cand[m++] = i;
      if (v > top) top = v;
    }
  }
  if (m === 0) return argmax(logits, n);
  const max = top / temperature;
  const weight = (i: number): number => Math.exp(logits[i]! / temperature - max);
  const before = (a: number, b: number): number => logits[b]! - logits[a]! || a - b;
  if (o.topK && o.topK > 0 && o.topK < m) {
    // transformers keeps every token tied with the k-th: every candidate at or above the k-th largest logit.
    const kth = kthLargest(logits, cand.subarray(0, m), o.topK);
    const kept: number[] = [];
    for (let j = 0; j < m; j++) if (logits[cand[j]!]! >= kth) kept.push(cand[j]!);
    kept.sort(before);
    let sum = 0;
    for (const i of kept) sum += weight(i);
    let k = 0;
    return drawFrom(() => kept[k++]!, kept.length, weight, sum, o.topP, rng);
  }
  let sum = 0;
  for (let j = 0; j < m; j++) sum += weight(cand[j]!);
  const heap = new HeapOrder(cand.subarray(0, m), before);
  return drawFrom(() => heap.next(), m, weight, sum, o.topP, rng);
}

/**
 * Top-p and the draw over `count` candidates that `next` yields highest first, each with probability
 * weight(i) / sum.
 */
function drawFrom(next: () => number, count: number, weight: (i: number) => number, sum: number, topP: number | undefined, rng: () => number): number {
  if (topP !== undefined && topP < 1) {
    // Keep the smallest prefix whose mass reaches top_p (at least one token), renormalised.
    const ids: number[] = [];
    const probs: number[] = [];
    let acc = 0;
    while (ids.length < count && acc < topP) {
      const i = next();
      const p = weight(i) / sum;
      ids.push(i);
      probs.push(p);
      acc += p;
    }
    let mass = 0;
    for (const p of probs) mass += p;
    let r = rng();
    for (let k = 0; k < ids.length; k++) {
      r -= probs[k]! / mass;
      if (r < 0) return ids[k]!;
    }
    return ids[ids.length - 1]!;
  }
  let r = rng();
  let last = -1;
  for (let k = 0; k < count; k++) {
    last = next();
    r -= weight(last) / sum;
    if (r < 0) return last;
  }
  return last;
}

/** A binary heap over candidate ids: next() pops them in `before` order. */
class HeapOrder {
  private readonly h: Int32Array;
  private size: number;
  constructor(
    ids: Int32Array,
    private readonly before: (a: number, b: number) => number,
  ) {
    this.h = Int32Array.from(ids);
    this.size = ids.length;
    for (let i = (this.size >> 1) - 1; i >= 0; i--) this.down(i);
  }

  next(): number {
    const top = this.h[0]!;
    this.h[0] = this.h[--this.size]!;
    this.down(0);
    return top;
  }

  private down(i: number): void {
    const h = this.h;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= this.size) return;
      const c = l + 1 < this.size && this.before(h[l + 1]!, h[l]!) < 0 ? l + 1 : l;
      if (this.before(h[c]!, h[i]!) >= 0) return;
      const t = h[i]!;
      h[i] = h[c]!;
      h[c] = t;
      i = c;
    }
  }
}

/** The k-th largest logit among `ids` (1 ≤ k < ids.length), through a min-heap of the k largest so far. */
function kthLargest(logits: Float32Array, ids: Int32Array, k: number): number {
  const h = new Float64Array(k);
  let size = 0;
  for (let j = 0; j < ids.length; j++) {
    const v = logits[ids[j]!]!;
    if (size < k) {
      let i = size++;
      h[i] = v;
      while (i > 0 && h[(i - 1) >> 1]! > h[i]!) {
        const p = (i - 1) >> 1;
        const t = h[p]!;
        h[p] = h[i]!;
        h[i] = t;
        i = p;
      }
    } else if (v > h[0]!) {
      h[0] = v;
      for (let i = 0; ; ) {
        const l = 2 * i + 1;
        if (l >= size) break;
        const c = l + 1 < size && h[l + 1]! < h[l]! ? l + 1 : l;
        if (h[c]! >= h[i]!) break;
        const t = h[i]!;
        h[i] = h[c]!;
        h[c] = t;
        i = c;
      }
    }
  }
  return h[0]!;
}

/**
 * The sampler's definition, computed the plain way: every candidate (logit above −∞ among the first n) sorted, top-k
 * with ties, softmax at the temperature, top-p, the draw. pickToken gives the same draws for the same random numbers
 * without sorting everything; this is the reference its test and bench/sampling.mjs compare it with.
 */
export function sampleBySorting(logits: Float32Array, n: number, o: SamplingOptions, rng: () => number): number {
  const temperature = o.temperature ?? 1;
  let ids = Array.from({ length: Math.min(n, logits.length) }, (_, i) => i).filter((i) => logits[i]! > -Infinity);
  if (ids.length === 0) return argmax(logits, n);
  ids.sort((a, b) => logits[b]! - logits[a]! || a - b);
  if (o.topK && o.topK > 0 && o.topK < ids.length) {
    const kth = logits[ids[o.topK - 1]!]!;
    ids = ids.filter((i, r) => r < o.topK! || logits[i] === kth);
  }
  const max = logits[ids[0]!]! / temperature;
  let probs = ids.map((i) => Math.exp(logits[i]! / temperature - max));
  let sum = probs.reduce((a, b) => a + b, 0);
  probs = probs.map((p) => p / sum);
  if (o.topP !== undefined && o.topP < 1) {
    let acc = 0;
    let keep = 0;
    while (keep < probs.length && acc < o.topP) acc += probs[keep++]!;
    ids = ids.slice(0, Math.max(1, keep));
    probs = probs.slice(0, Math.max(1, keep));
    sum = probs.reduce((a, b) => a + b, 0);
    probs = probs.map((p) => p / sum);
  }
  let r = rng();
  for (let k = 0; k < ids.length; k++) {
    r -= probs[k]!;
    if (r < 0) return ids[k]!;
  }
  return ids[ids.length - 1]!;
}

export function argmax(v: Float32Array | number[], end = v.length): number {
  let best = 0;
  let bestV = -Infinity;
  for (let i = 0; i < end; i++) {
    const x = v[i]!;
    if (x > bestV) {
      bestV = x;
      best = i;
    }
  }
  return best;
}
