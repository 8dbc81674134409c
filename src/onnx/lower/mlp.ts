/** Lowering of a dense MLP block: down(act(gate(x)) * up(x)), or down(act(up(x))) without GLU. */
import type { MlpOp } from '../../schema/spec.js';
import { activate } from './activation.js';
import { linear } from './context.js';
import type { LowerContext } from './context.js';

export function lowerMlp(ctx: LowerContext, x: string, j: number, op: MlpOp): string {
  const p = `blocks.${j}.mlp`;
  const up = linear(ctx, x, `${p}.up`);
  const h = op.glu ? ctx.g.op('Mul', [activate(ctx.g, linear(ctx, x, `${p}.gate`), op.act), up]) : activate(ctx.g, up, op.act);
  return linear(ctx, h, `${p}.down`);
}
