/**
 * SCAP (statistical calibrated activation pruning) at the input of a fully-connected layer, with
 * Mode-Centering folded into the bias:
 *
 *   x' = x − m;   x_s = x' where |x'| > t, else 0;   y = x_s · Wᵀ + b + m · (W · 1)
 *
 * With t < 0 nothing is pruned and y = x · Wᵀ + b exactly (the shift is lossless). A "site" is one
 * input tensor: layers sharing an input (q/k/v, gate/up) share one site, hence one mask. Sites are
 * named by their block and the first layer reading them (blocks.3.mamba.in_proj, blocks.5.mlp.up,
 * blocks.1.moe.2.down for expert 2, …).
 *
 * Two uses: a pruned model (m, t constants, per-site kept/total counts as extra outputs so that the
 * achieved sparsity can be reported), and the calibration graph (m, t graph inputs, the raw input of
 * every site an extra output).
 */
import type { CanonicalTensor } from '../../schema/canonical.js';
import { readExpert, readWhole } from '../../schema/canonical.js';
import { HUBMOE_DOMAIN } from '../graph.js';
import type { WeightPart } from '../graph.js';
import { TensorDataType } from '../proto.js';
import { has, hubmoeLinear, linear, tensor, transposed, weight } from './context.js';
import type { LowerContext } from './context.js';

import type { ScapLayerType } from '../../schema/spec.js';

export type { ScapLayerType } from '../../schema/spec.js';
export { SCAP_LAYER_TYPES } from '../../schema/spec.js';

export interface ScapSiteValues {
  mode: number;
  threshold: number;
}

export interface ScapLowering {
  kind: 'pruned' | 'calibrate';
  /** Pruned: the sparsified sites and their (m, t); sites absent here stay dense. */
  sites: Record<string, ScapSiteValues>;
  /** Filled while lowering: every site met, in graph order, with its type and the weights reading it. */
  registered: Array<{ site: string; type: ScapLayerType; weights: string[] }>;
}

export const scapInput = (site: string): string => `scap_input.${site}`;
export const scapModeInput = (site: string): string => `scap_mode.${site}`;
export const scapThresholdInput = (site: string): string => `scap_threshold.${site}`;
export const scapKept = (site: string): string => `scap_kept.${site}`;
export const scapTotal = (site: string): string => `scap_total.${site}`;

/** An FC input after SCAP: the (possibly sparsified) values and the mode shift to compensate. */
export interface Sparsified {
  x: string;
  site?: string;
  /** Calibration graph: the mode, a scalar graph input (m·W·1 is computed at run time). */
  mode?: string;
  /** Pruned graph: a non-zero mode, folded into each reading layer's bias at export. */
  modeValue?: number;
  /**
   * Pruned graph, fused target: `x` is the raw input and each reading layer is one ai.hubmoe
   * SparseLinear that prunes it itself (its `mode` and `threshold` attributes).
   */
  fused?: ScapSiteValues;
}

/** The ONNX initializer holding the folded bias b + m·W·1 of the layer `prefix` (or of expert `e`). */
export function scapBiasName(weightName: string, expert?: number): string {
  return `${weightName}${expert === undefined ? '' : `.${expert}`}.scap_bias`;
}

/**
 * Applies SCAP at `site` (when the model is pruned there, or always in the calibration graph);
 * `weights` are the canonical weight names of the layers reading this input (for the calibration's
 * mode selection).
 */
export function sparsify(ctx: LowerContext, x: string, site: string, type: ScapLayerType, weights: string[]): Sparsified {
  const scap = ctx.scap;
  if (!scap) return { x };
  const { g } = ctx;
  const f32 = TensorDataType.FLOAT;
  let mode: string | undefined;
  let threshold: string;
  let modeValue: number | undefined;
  if (scap.kind === 'calibrate') {
    scap.registered.push({ site, type, weights });
    g.output(scapInput(site), g.op('Identity', [x]), g.floatType, undefined);
    mode = g.input(scapModeInput(site), f32, []);
    threshold = g.input(scapThresholdInput(site), f32, []);
  } else {
    const values = scap.sites[site];
    if (!values) return { x };
    scap.registered.push({ site, type, weights });
    if (ctx.target === 'fused') return { x, site, fused: values };
    if (values.mode !== 0) {
      modeValue = values.mode;
      mode = g.scalar(values.mode, f32);
    }
    threshold = g.scalar(values.threshold, f32);
  }
  const fp16 = g.floatType === TensorDataType.FLOAT16;
  const x32 = fp16 ? g.op('Cast', [x], { to: f32 }) : x;
  const shifted = mode ? g.op('Sub', [x32, mode]) : x32;
  const keep = g.op('Greater', [g.op('Abs', [shifted]), threshold]);
  let kept = g.op('Where', [keep, shifted, g.scalar(0, f32)]);
  if (fp16) kept = g.op('Cast', [kept], { to: TensorDataType.FLOAT16 });
  const keepF = g.op('Cast', [keep], { to: f32 });
  g.output(scapKept(site), g.op('ReduceSum', [keepF], { keepdims: 0 }), f32, []);
  g.output(scapTotal(site), g.op('Cast', [g.op('Size', [keepF])], { to: f32 }), f32, []);
  if (scap.kind === 'calibrate') return { x: kept, site, mode: fp16 ? g.op('Cast', [mode!], { to: TensorDataType.FLOAT16 }) : mode };
  return { x: kept, site, modeValue };
}

/**
 * scale · Σ_i W[o, i] (+ b[o]) of a [out, in] weight (or of expert `expert` of a stacked [X, out, in]
 * one, whose bias `bias` is then the stacked [X, out] one), as a weight part of `out` elements.
 */
export function rowSumPart(ctx: LowerContext, weightName: string, scale: number, expert?: number, bias?: string): WeightPart {
  const t: CanonicalTensor = tensor(ctx, weightName);
  const [rows, cols] = (expert === undefined ? t.shape : t.shape.slice(1)) as [number, number];
  return {
    elements: rows,
    read: async () => {
      const out = new Float32Array(rows);
      if (scale !== 0) {
        const w = expert === undefined ? await readWhole(t) : await readExpert(t, expert);
        for (let r = 0; r < rows; r++) {
          let s = 0;
          for (let c = 0; c < cols; c++) s += w[r * cols + c]!;
          out[r] = scale * s;
        }
      }
      if (bias) {
        const b = await readWhole(tensor(ctx, bias));
        const off = expert === undefined ? 0 : expert * rows;
        for (let r = 0; r < rows; r++) out[r]! += b[off + r]!;
      }
      return out;
    },
  };
}

/** rowSumPart as an initializer named `name`. */
function rowSum(ctx: LowerContext, weightName: string, name: string, scale: number, expert?: number, bias?: string): string {
  const part = rowSumPart(ctx, weightName, scale, expert, bias);
  return ctx.g.weight(name, [part.elements], [part]);
}

/**
 * y = x_s · Wᵀ (+ b) (+ m · W·1) for the canonical linear layer `prefix` (`prefix.weight`, optional `prefix.bias`).
 * `gemv`: where the input is not pruned, the fused target computes it with ai.hubmoe Linear (the weight as it is,
 * [out, in]): one GEMV launch at decode where cuBLAS splits K and adds the parts in a second launch, or reads the
 * weights slower (Mamba out_proj, the attention projections; not in_proj, which cuBLAS reads as fast).
 */
export function sparseLinear(ctx: LowerContext, s: Sparsified, prefix: string, opts: { gemv?: boolean } = {}): string {
  const { g } = ctx;
  if (opts.gemv && ctx.target === 'fused' && !s.fused && !s.mode && s.modeValue === undefined) return hubmoeLinear(ctx, s.x, prefix);
  const w = `${prefix}.weight`;
  if (s.fused) {
    // ai.hubmoe SparseLinear: prunes x itself and reads only the weight rows of kept inputs ([in, out] layout).
    const b = has(ctx, `${prefix}.bias`) ? `${prefix}.bias` : undefined;
    const bias = s.fused.mode !== 0 ? rowSum(ctx, w, scapBiasName(w), s.fused.mode, undefined, b) : b ? weight(ctx, b) : '';
    const inputs = bias ? [s.x, transposed(ctx, w), bias] : [s.x, transposed(ctx, w)];
    return g.op('SparseLinear', inputs, { mode: { float: s.fused.mode }, threshold: { float: s.fused.threshold } }, HUBMOE_DOMAIN);
  }
  if (s.modeValue !== undefined) {
    // Pruned: one folded bias b + m·W·1.
    const b = has(ctx, `${prefix}.bias`) ? `${prefix}.bias` : undefined;
    return g.op('Add', [g.op('MatMul', [s.x, transposed(ctx, w)]), rowSum(ctx, w, scapBiasName(w), s.modeValue, undefined, b)]);
  }
  const y = linear(ctx, s.x, prefix);
  return s.mode ? g.op('Add', [y, g.op('Mul', [s.mode, rowSum(ctx, w, `${w}.rowsum`, 1)])]) : y;
}

/** The mode correction m · (W_e · 1) of expert `e` of a stacked weight, or nothing without a shift. */
export function expertModeCorrection(ctx: LowerContext, s: Sparsified, name: string, e: number): string | undefined {
  if (s.modeValue !== undefined) return rowSum(ctx, name, scapBiasName(name, e), s.modeValue, e);
  return s.mode ? ctx.g.op('Mul', [s.mode, rowSum(ctx, name, `${name}.${e}.rowsum`, 1, e)]) : undefined;
}
