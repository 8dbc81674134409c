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
  const temperature = o.temperature ?? 1;
  const n = Math.min(vocabSize, logits.length);
  let ids = Array.from({ length: n }, (_, i) => i).filter((i) => logits[i]! > -Infinity);
  ids.sort((a, b) => logits[b]! - logits[a]! || a - b);
  if (o.topK && o.topK > 0 && o.topK < ids.length) {
    // transformers keeps every token tied with the k-th.
    const kth = logits[ids[o.topK - 1]!]!;
    ids = ids.filter((i, r) => r < o.topK! || logits[i] === kth);
  }
  const scaled = ids.map((i) => logits[i]! / temperature);
  const max = scaled[0]!;
  let probs = scaled.map((s) => Math.exp(s - max));
  let sum = probs.reduce((a, b) => a + b, 0);
  probs = probs.map((p) => p / sum);
  if (o.topP !== undefined && o.topP < 1) {
    // Keep the smallest prefix whose mass reaches top_p (at least one token).
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
