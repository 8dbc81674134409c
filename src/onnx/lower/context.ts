/**
 * What every lowering function gets: the graph under construction, the spec, the canonical
 * tensors, and helpers that turn canonical tensors into initializers in the layout ops want.
 */
import { HubmoeError } from '../../errors.js';
import type { CanonicalTensor, CanonicalTensors } from '../../schema/canonical.js';
import { readExpert, readWhole } from '../../schema/canonical.js';
import type { ModelSpec } from '../../schema/spec.js';
import { HUBMOE_DOMAIN } from '../graph.js';
import type { GraphBuilder, WeightPart } from '../graph.js';
import { TensorDataType } from '../proto.js';
import type { ScapLowering } from './scap.js';

export type ExportTarget = 'portable' | 'fused';

export interface LowerContext {
  g: GraphBuilder;
  spec: ModelSpec;
  tensors: CanonicalTensors;
  target: ExportTarget;
  /** Current positions' attention mask as floats, [batch, seq, 1]. */
  maskCur: string;
  /**
   * Additive attention bias in fp32 for attention with G query heads per KV head, [batch, 1, G·seq, total]
   * (row g·seq + i: query i), attention models only.
   */
  attnBias?: (G: number) => string;
  /**
   * Static-cache graph only, how a KV buffer [B, KV, max_length, Dh] takes the new keys: `isNew` [1, 1,
   * max_length, 1] marks the slots written by this run, `source` [max_length] the input token each slot
   * reads (clamped; used where isNew).
   */
  cacheWrite?: { isNew: string; source: string };
  /** Expert activation overrides applied by the exporter (recorded in hubmoe.json). */
  options: Record<string, string | number | boolean>;
  /** SCAP sparsification of FC inputs (pruned models and the calibration graph). */
  scap?: ScapLowering;
}

export function tensor(ctx: LowerContext, name: string): CanonicalTensor {
  const t = ctx.tensors.get(name);
  if (!t) throw new HubmoeError('MISSING_TENSOR', `canonical tensor ${name} is missing`);
  return t;
}

export function has(ctx: LowerContext, name: string): boolean {
  return ctx.tensors.has(name);
}

function firstFile(t: CanonicalTensor): string | undefined {
  return t.parts.find((p) => p.file)?.file;
}

/** A canonical tensor as an initializer, unchanged (layout [out, in] or stacked [X, out, in]). */
export function weight(ctx: LowerContext, name: string, dataType?: TensorDataType.FLOAT | TensorDataType.FLOAT16): string {
  const t = tensor(ctx, name);
  return ctx.g.weight(name, t.shape, t.parts, dataType);
}

/** A canonical tensor transformed element-wise (e.g. A = -exp(A_log)). */
export function mapped(
  ctx: LowerContext,
  name: string,
  initName: string,
  fn: (v: Float32Array) => Float32Array,
  dataType?: TensorDataType.FLOAT | TensorDataType.FLOAT16,
): string {
  const t = tensor(ctx, name);
  const parts: WeightPart[] = t.parts.map((p) => ({ elements: p.elements, file: p.file, read: async () => fn(await p.read()) }));
  return ctx.g.weight(initName, t.shape, parts, dataType);
}

export function transpose2d(v: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(v.length);
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    for (let c = 0; c < cols; c++) out[c * rows + r] = v[base + c]!;
  }
  return out;
}

/** A 2-D `[out, in]` weight transposed to `[in, out]` for MatMul. */
export function transposed(ctx: LowerContext, name: string): string {
  const t = tensor(ctx, name);
  const [rows, cols] = t.shape as [number, number];
  const part: WeightPart = { elements: rows * cols, file: firstFile(t), read: async () => transpose2d(await readWhole(t), rows, cols) };
  return ctx.g.weight(`${name}.T`, [cols, rows], [part]);
}

/** Expert `e` of a stacked `[X, out, in]` weight, transposed to `[in, out]`. */
export function expertTransposed(ctx: LowerContext, name: string, e: number): string {
  const t = tensor(ctx, name);
  const [, rows, cols] = t.shape as [number, number, number];
  const p = t.parts.length === t.shape[0] ? t.parts[e]! : undefined;
  const read = async () => transpose2d(await readExpert(t, e), rows, cols);
  return ctx.g.weight(`${name}.${e}.T`, [cols, rows], [{ elements: rows * cols, file: p?.file ?? firstFile(t), read }]);
}

/** Row `e` of a stacked `[X, n]` bias. */
export function expertRow(ctx: LowerContext, name: string, e: number): string {
  const t = tensor(ctx, name);
  const n = t.shape[1]!;
  return ctx.g.weight(`${name}.${e}`, [n], [{ elements: n, file: firstFile(t), read: async () => (await readWhole(t)).slice(e * n, (e + 1) * n) }]);
}

/** The same as `linear` with ai.hubmoe Linear, which reads the canonical [out, in] weight as it is (fused target). */
export function hubmoeLinear(ctx: LowerContext, x: string, prefix: string): string {
  const inputs = [x, weight(ctx, `${prefix}.weight`)];
  if (has(ctx, `${prefix}.bias`)) inputs.push(weight(ctx, `${prefix}.bias`));
  return ctx.g.op('Linear', inputs, {}, HUBMOE_DOMAIN);
}

/** y = x · Wᵀ (+ b) for a canonical linear layer `prefix` (`prefix.weight`, optional `prefix.bias`). */
export function linear(ctx: LowerContext, x: string, prefix: string): string {
  let y = ctx.g.op('MatMul', [x, transposed(ctx, `${prefix}.weight`)]);
  if (has(ctx, `${prefix}.bias`)) y = ctx.g.op('Add', [y, weight(ctx, `${prefix}.bias`)]);
  return y;
}
