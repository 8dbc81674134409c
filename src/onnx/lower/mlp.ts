/** Lowering of a dense MLP block: down(act(gate(x)) * up(x)), or down(act(up(x))) without GLU. */
import type { MlpOp } from '../../schema/spec.js';
import { HUBMOE_DOMAIN } from '../graph.js';
import type { WeightPart } from '../graph.js';
import { activate } from './activation.js';
import { has, tensor } from './context.js';
import type { LowerContext } from './context.js';
import { sparseLinear, sparsify } from './scap.js';

export function lowerMlp(ctx: LowerContext, x: string, j: number, op: MlpOp): string {
  const p = `blocks.${j}.mlp`;
  if (ctx.target === 'fused' && !scapAt(ctx, p)) return lowerDenseMoe(ctx, x, p, op);
  const xs = sparsify(ctx, x, `${p}.up`, 'mlp_up', op.glu ? [`${p}.gate.weight`, `${p}.up.weight`] : [`${p}.up.weight`]);
  const up = sparseLinear(ctx, xs, `${p}.up`);
  const h = op.glu ? ctx.g.op('Mul', [activate(ctx.g, sparseLinear(ctx, xs, `${p}.gate`), op.act), up]) : activate(ctx.g, up, op.act);
  return sparseLinear(ctx, sparsify(ctx, h, `${p}.down`, 'mlp_down', [`${p}.down.weight`]), `${p}.down`);
}

/** Whether SCAP prunes an input of the MLP `p` (or the graph calibrates SCAP): those keep the per-layer lowering. */
function scapAt(ctx: LowerContext, p: string): boolean {
  const scap = ctx.scap;
  return !!scap && (scap.kind === 'calibrate' || Object.keys(scap.sites).some((site) => site.startsWith(`${p}.`)));
}

/**
 * The fused target's MLP: one ai.hubmoe MoE with routing "none" (one expert that every token takes with weight 1).
 * fc1 [1, F1, H] holds the gate rows then the up rows (F1 = 2I) with GLU, or the up rows alone; fc2 [1, H, I] is
 * the down projection. On the GPU at a few tokens that is two launches (gate and up with the activation and the
 * product in one pass over their weights, then down with its bias) instead of six.
 */
function lowerDenseMoe(ctx: LowerContext, x: string, p: string, op: MlpOp): string {
  const { g } = ctx;
  const names = op.glu ? ['gate', 'up'] : ['up'];
  const up = tensor(ctx, `${p}.up.weight`);
  const [I, H] = up.shape as [number, number];
  const fc1 = g.weight(`${p}.fc1.weight`, [1, names.length * I, H], names.flatMap((n) => tensor(ctx, `${p}.${n}.weight`).parts));
  const down = tensor(ctx, `${p}.down.weight`);
  const fc2 = g.weight(`${p}.fc2.weight`, [1, ...down.shape], down.parts);
  // Biases, where the checkpoint has any: a missing one of gate/up is zeros.
  const zeros = (n: number): WeightPart => ({ elements: n, read: async () => new Float32Array(n) });
  const bias1 = names.some((n) => has(ctx, `${p}.${n}.bias`))
    ? g.weight(`${p}.fc1.bias`, [1, names.length * I], names.flatMap((n) => (has(ctx, `${p}.${n}.bias`) ? tensor(ctx, `${p}.${n}.bias`).parts : [zeros(I)])))
    : '';
  const bias2 = has(ctx, `${p}.down.bias`) ? g.weight(`${p}.fc2.bias`, [1, H], tensor(ctx, `${p}.down.bias`).parts) : '';
  return g.op('MoE', [x, '', fc1, bias1, fc2, bias2], { k: 1, routing: 'none', activation: op.act, glu: op.glu ? 1 : 0 }, HUBMOE_DOMAIN);
}
