/** Lowering of the schema's norms: RMSNorm and LayerNorm over the last axis, computed in fp32. */
import type { NormSpec } from '../../schema/spec.js';
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
