/** Lowering of the schema's norms: RMSNorm and LayerNorm over the last axis, computed in fp32. */
import type { NormSpec } from '../../schema/spec.js';
import { HUBMOE_DOMAIN } from '../graph.js';
import { TensorDataType } from '../proto.js';
import { has, weight } from './context.js';
import type { LowerContext } from './context.js';

/**
 * The norm of `x`. An RMSNorm is ONNX's SimplifiedLayerNormalization on the portable target and an ai.hubmoe
 * SkipRMSNorm without skip on the fused target (see lowerSkipNorm).
 */
export function lowerNorm(ctx: LowerContext, x: string, prefix: string, norm: NormSpec): string {
  const { g } = ctx;
  const scale = weight(ctx, `${prefix}.weight`);
  if (norm.kind === 'rms') {
    if (ctx.target === 'fused') return g.op('SkipRMSNorm', [x, '', scale], { epsilon: { float: norm.eps } }, HUBMOE_DOMAIN);
    return g.op('SimplifiedLayerNormalization', [x, scale], { axis: -1, epsilon: { float: norm.eps }, stash_type: 1 });
  }
  const bias = has(ctx, `${prefix}.bias`) ? weight(ctx, `${prefix}.bias`) : g.floats(new Array(ctx.spec.hidden).fill(0));
  if (g.floatType === TensorDataType.FLOAT16) {
    // LayerNormalization's fp16 kernels accumulate in fp32 (stash_type 1).
    return g.op('LayerNormalization', [x, scale, bias], { axis: -1, epsilon: { float: norm.eps }, stash_type: 1 });
  }
  return g.op('LayerNormalization', [x, scale, bias], { axis: -1, epsilon: { float: norm.eps } });
}

/**
 * The residual add of the previous block followed by this block's norm, `sum = x + skip; n = norm(sum)`, as one
 * ai.hubmoe SkipRMSNorm node on the fused target, with both outputs (n, and sum: the residual stream). Its CUDA
 * kernel is a programmatic dependent launch like hubmoe's other decode kernels, where ONNX Runtime's Add and norm
 * (or its SkipSimplifiedLayerNormalization) are plain launches of a few microseconds each at one decode token; it
 * rounds the sum and the normalized row to the model dtype as transformers does. Undefined where the separate Add
 * and norm are kept: the portable target (only ONNX Runtime's built-in ops) and LayerNorms.
 */
export function lowerSkipNorm(ctx: LowerContext, x: string, skip: string, prefix: string, norm: NormSpec): { n: string; sum: string } | undefined {
  if (ctx.target !== 'fused' || norm.kind !== 'rms') return undefined;
  const { g } = ctx;
  const [n, sum] = g.node('SkipRMSNorm', [x, skip, weight(ctx, `${prefix}.weight`)], {
    attrs: { epsilon: { float: norm.eps } },
    outputs: 2,
    domain: HUBMOE_DOMAIN,
  });
  return { n: n!, sum: sum! };
}
