/** Element-wise activations of MLPs and experts, each computed exactly as its reference defines it. */
import { HubmoeError } from '../../errors.js';
import type { Activation } from '../../schema/spec.js';
import type { GraphBuilder } from '../graph.js';

export function activate(g: GraphBuilder, x: string, act: Activation): string {
  switch (act) {
    case 'silu':
      return g.op('Mul', [x, g.op('Sigmoid', [x])]);
    case 'relu':
      return g.op('Relu', [x]);
    case 'gelu_erf':
      return g.op('Gelu', [x], { approximate: 'none' });
    case 'gelu_tanh':
      return g.op('Gelu', [x], { approximate: 'tanh' });
    default:
      throw new HubmoeError('UNSUPPORTED', `activation ${String(act)} has no lowering`);
  }
}
