/** Lowering of a dense MLP block: down(act(gate(x)) * up(x)), or down(act(up(x))) without GLU. */
import type { MlpOp } from '../../schema/spec.js';
import { activate } from './activation.js';
import type { LowerContext } from './context.js';
import { sparseLinear, sparsify } from './scap.js';

export function lowerMlp(ctx: LowerContext, x: string, j: number, op: MlpOp): string {
  const p = `blocks.${j}.mlp`;
  const xs = sparsify(ctx, x, `${p}.up`, 'mlp_up', op.glu ? [`${p}.gate.weight`, `${p}.up.weight`] : [`${p}.up.weight`]);
  const up = sparseLinear(ctx, xs, `${p}.up`);
  const h = op.glu ? ctx.g.op('Mul', [activate(ctx.g, sparseLinear(ctx, xs, `${p}.gate`), op.act), up]) : activate(ctx.g, up, op.act);
  return sparseLinear(ctx, sparsify(ctx, h, `${p}.down`, 'mlp_down', [`${p}.down.weight`]), `${p}.down`);
}
