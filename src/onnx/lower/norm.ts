/** Lowering of the schema's norms: RMSNorm and LayerNorm over the last axis, computed in fp32. */
import type { NormSpec } from '../../schema/spec.js';
import { MS_DOMAIN } from '../graph.js';
import { TensorDataType } from '../proto.js';
import { has, weight } from './context.js';
import type { LowerContext } from './context.js';

export function lowerNorm(ctx: LowerContext, x: string, prefix: string, norm: NormSpec): string {
  const { g } = ctx;
  const scale = weight(ctx, `${prefix}.weight`);
  if (norm.kind === 'rms') {
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
 * com.microsoft SkipSimplifiedLayerNormalization node on the fused target (one kernel instead of ONNX Runtime's
 * Add and its one-block-per-row RMSNorm, which at one decode token are two launches of a few microseconds each
 * per block). Undefined where the separate Add and norm are kept: the portable target (transformers.js has no such
 * op in every backend) and LayerNorms.
 */
export function lowerSkipNorm(ctx: LowerContext, x: string, skip: string, prefix: string, norm: NormSpec): { n: string; sum: string } | undefined {
  if (ctx.target !== 'fused' || norm.kind !== 'rms') return undefined;
  const { g } = ctx;
  const [n, , , sum] = g.node('SkipSimplifiedLayerNormalization', [x, skip, weight(ctx, `${prefix}.weight`)], {
    attrs: { epsilon: { float: norm.eps } },
    outputs: 4,
    absent: [1, 2],
    domain: MS_DOMAIN,
  });
  return { n: n!, sum: sum! };
}
