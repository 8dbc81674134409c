/**
 * Canonical tensors as converters hand them to the exporter: a name, a shape, and the data as a
 * list of parts that concatenate (in row-major order) to the whole tensor. Stacked expert tensors
 * have one part per expert, so an exporter can stream them without holding the stack in memory.
 */
import { HubmoeError } from '../errors.js';
import { canonicalTensors } from './tensors.js';
import type { ModelSpec } from './spec.js';

export interface CanonicalPart {
  elements: number;
  /** Source file holding the data (for shard-ordered reading). */
  file?: string;
  read(): Promise<Float32Array>;
}

export interface CanonicalTensor {
  name: string;
  shape: number[];
  parts: CanonicalPart[];
  /** Where the data came from, for messages (e.g. the source tensor names). */
  origin: string;
}

export type CanonicalTensors = Map<string, CanonicalTensor>;

export async function readWhole(t: CanonicalTensor): Promise<Float32Array> {
  if (t.parts.length === 1) return t.parts[0]!.read();
  const out = new Float32Array(t.parts.reduce((a, p) => a + p.elements, 0));
  let off = 0;
  for (const p of t.parts) {
    const data = await p.read();
    out.set(data, off);
    off += p.elements;
  }
  return out;
}

/** Expert `e` of a stacked `[X, …]` tensor: its own part when stored per expert, else a slice of the whole. */
export async function readExpert(t: CanonicalTensor, e: number): Promise<Float32Array> {
  if (t.parts.length === t.shape[0]) return t.parts[e]!.read();
  const per = t.shape.slice(1).reduce((a, b) => a * b, 1);
  return (await readWhole(t)).subarray(e * per, (e + 1) * per);
}

/**
 * Checks a converter's tensor map against the spec: every expected tensor present with its shape,
 * nothing unexpected. Problems are reported with the source names they came from.
 */
export function checkCanonical(spec: ModelSpec, tensors: CanonicalTensors, where: string): void {
  const expected = canonicalTensors(spec);
  const missing: string[] = [];
  const wrong: string[] = [];
  for (const e of expected) {
    const t = tensors.get(e.name);
    if (!t) {
      missing.push(e.name);
      continue;
    }
    if (t.shape.length !== e.shape.length || t.shape.some((d, i) => d !== e.shape[i])) {
      wrong.push(`${t.origin}: shape [${t.shape.join(', ')}], expected [${e.shape.join(', ')}] for ${e.name}`);
    }
    const n = t.parts.reduce((a, p) => a + p.elements, 0);
    if (n !== e.shape.reduce((a, b) => a * b, 1)) wrong.push(`${t.origin}: ${n} elements for ${e.name} [${e.shape.join(', ')}]`);
  }
  if (wrong.length) throw new HubmoeError('BAD_SHAPE', `${where}: tensor shapes do not match the config:\n  - ${wrong.join('\n  - ')}`);
  if (missing.length) {
    throw new HubmoeError('MISSING_TENSOR', `${where}: the checkpoint lacks tensors the config requires: ${missing.slice(0, 8).join(', ')}${missing.length > 8 ? ` and ${missing.length - 8} more` : ''}`);
  }
  const known = new Set(expected.map((e) => e.name));
  const extra = [...tensors.keys()].filter((k) => !known.has(k));
  if (extra.length) throw new HubmoeError('BAD_CONFIG', `${where}: tensors the config does not account for: ${extra.slice(0, 8).join(', ')}`);
}
