/**
 * Lowering of a mixture-of-experts block. Two forms, chosen per block:
 *
 * - `ort`: ONNX Runtime's com.microsoft MoE op. Its routing is softmax over all experts then top-k,
 *   optionally renormalised; sigmoid top-1 routing (BlackMamba) becomes softmax top-1 renormalised
 *   (weight 1, same argmax) times sigmoid(max logit). Its experts compute SwiGLU (gate and up rows
 *   interleaved in fc1), SiLU, ReLU or tanh-GELU.
 * - `gather`: plain ops for everything else (erf-GELU experts, GEGLU, sigmoid top-k > 1): routing
 *   weights [T, X] built with TopK + ScatterElements, then per expert the routed rows are gathered,
 *   run through the expert MLP, scaled and scatter-added into the output. Exact for any routing.
 */
import type { MoeOp } from '../../schema/spec.js';
import { HUBMOE_DOMAIN, MS_DOMAIN } from '../graph.js';
import type { WeightPart } from '../graph.js';
import { activate } from './activation.js';
import { expertRow, expertTransposed, has, hubmoeLinear, linear, tensor, transpose2d, weight } from './context.js';
import { readExpert } from '../../schema/canonical.js';
import { expertModeCorrection, rowSumPart, sparsify } from './scap.js';
import { TensorDataType } from '../proto.js';
import type { Sparsified } from './scap.js';
import type { LowerContext } from './context.js';

export type MoeLowering = 'ort' | 'gather';

export function moeLowering(op: MoeOp): MoeLowering {
  const e = op.expert;
  const actOk = e.glu ? e.act === 'silu' : e.act === 'silu' || e.act === 'relu' || e.act === 'gelu_tanh';
  const routeOk = op.router.act === 'softmax' || (op.router.act === 'sigmoid' && op.top_k === 1);
  return actOk && routeOk ? 'ort' : 'gather';
}

export function lowerMoe(ctx: LowerContext, x: string, j: number, op: MoeOp): string {
  const { g } = ctx;
  const H = ctx.spec.hidden;
  // ai.hubmoe MoE takes [..., H] as it is; the router is an ai.hubmoe Linear (its bias added in the same launch,
  // and a programmatic dependent launch like the MoE op's kernels after it).
  if (ctx.target === 'fused') return lowerHubmoeMoe(ctx, x, hubmoeLinear(ctx, x, `blocks.${j}.moe.router`), j, op);
  const x2 = g.op('Reshape', [x, g.ints([-1, H])]);
  const logits = linear(ctx, x2, `blocks.${j}.moe.router`);
  // Sparsified experts (SCAP) need the per-expert lowering: each expert's inputs are pruned on their own.
  const scapExperts = ctx.scap && (ctx.scap.kind === 'calibrate' || Object.keys(ctx.scap.sites).some((site) => site.startsWith(`blocks.${j}.moe.`)));
  const y2 = moeLowering(op) === 'ort' && !scapExperts ? lowerOrtMoe(ctx, x2, logits, j, op) : lowerGatherMoe(ctx, x2, logits, j, op);
  return g.op('Reshape', [y2, g.op('Shape', [x])]);
}

/** fc1 for the MoE op: [X, 2I, H] with gate and up rows interleaved (swiglu_fusion=1), or up alone. */
function fc1Weight(ctx: LowerContext, j: number, op: MoeOp): string {
  const p = `blocks.${j}.moe`;
  const up = tensor(ctx, `${p}.up.weight`);
  if (!op.expert.glu) return weight(ctx, `${p}.up.weight`);
  const gate = tensor(ctx, `${p}.gate.weight`);
  const [X, I, H] = up.shape as [number, number, number];
  const perExpert = (t: typeof up, e: number): WeightPart =>
    t.parts.length === X ? t.parts[e]! : { elements: I * H, read: async () => (await readAll(t)).subarray(e * I * H, (e + 1) * I * H) };
  const parts: WeightPart[] = [];
  for (let e = 0; e < X; e++) {
    const gp = perExpert(gate, e);
    const upp = perExpert(up, e);
    parts.push({
      elements: 2 * I * H,
      file: gp.file,
      read: async () => interleaveRows(await gp.read(), await upp.read(), I, H),
    });
  }
  return ctx.g.weight(`${p}.fc1_interleaved`, [X, 2 * I, H], parts);
}

function fc1Bias(ctx: LowerContext, j: number, op: MoeOp): string {
  const p = `blocks.${j}.moe`;
  if (!op.expert.glu) return weight(ctx, `${p}.up.bias`);
  const gate = tensor(ctx, `${p}.gate.bias`);
  const up = tensor(ctx, `${p}.up.bias`);
  const [X, I] = up.shape as [number, number];
  const part: WeightPart = {
    elements: 2 * X * I,
    read: async () => {
      const gv = await readAll(gate);
      const uv = await readAll(up);
      const out = new Float32Array(2 * X * I);
      for (let e = 0; e < X; e++) out.set(interleaveRows(gv.subarray(e * I, (e + 1) * I), uv.subarray(e * I, (e + 1) * I), I, 1), e * 2 * I);
      return out;
    },
  };
  return ctx.g.weight(`${p}.fc1_bias_interleaved`, [X, 2 * I], [part]);
}

async function readAll(t: { parts: WeightPart[] }): Promise<Float32Array> {
  const n = t.parts.reduce((a, p) => a + p.elements, 0);
  const out = new Float32Array(n);
  let off = 0;
  for (const p of t.parts) {
    out.set(await p.read(), off);
    off += p.elements;
  }
  return out;
}

/** Rows of `a` and `b` ([I, H] each) interleaved: a0, b0, a1, b1, … */
export function interleaveRows(a: Float32Array, b: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(2 * rows * cols);
  for (let r = 0; r < rows; r++) {
    out.set(a.subarray(r * cols, (r + 1) * cols), 2 * r * cols);
    out.set(b.subarray(r * cols, (r + 1) * cols), (2 * r + 1) * cols);
  }
  return out;
}

function lowerOrtMoe(ctx: LowerContext, x2: string, logits: string, j: number, op: MoeOp): string {
  const { g } = ctx;
  const p = `blocks.${j}.moe`;
  const e = op.expert;
  const sigmoid = op.router.act === 'sigmoid';
  const inputs = [
    x2,
    logits,
    fc1Weight(ctx, j, op),
    e.bias ? fc1Bias(ctx, j, op) : '',
    weight(ctx, `${p}.down.weight`),
    e.bias ? weight(ctx, `${p}.down.bias`) : '',
  ];
  const activation = e.glu ? 'swiglu' : e.act === 'gelu_tanh' ? 'gelu' : e.act;
  const y = g.op(
    'MoE',
    inputs,
    {
      k: op.top_k,
      normalize_routing_weights: sigmoid || op.router.renormalize ? 1 : 0,
      activation_type: activation,
      swiglu_fusion: e.glu ? 1 : undefined,
      activation_alpha: e.glu ? { float: 1.0 } : undefined,
      activation_beta: e.glu ? { float: 0.0 } : undefined,
    },
    MS_DOMAIN,
  );
  if (!sigmoid) return y;
  const score = g.op('Sigmoid', [g.op('ReduceMax', [logits, g.ints([-1])], { keepdims: 1 })]);
  return g.op('Mul', [y, score]);
}

/** fc1 for ai.hubmoe MoE: [X, F1, H] with each expert's gate rows then its up rows (concatenated). */
function concatenated(ctx: LowerContext, j: number, op: MoeOp, kind: 'weight' | 'bias'): string {
  const p = `blocks.${j}.moe`;
  const up = tensor(ctx, `${p}.up.${kind}`);
  if (!op.expert.glu) return weight(ctx, `${p}.up.${kind}`);
  const gate = tensor(ctx, `${p}.gate.${kind}`);
  const X = up.shape[0]!;
  const per = up.shape.slice(1).reduce((a, b) => a * b, 1);
  const perExpert = (t: typeof up, e: number): WeightPart =>
    t.parts.length === X ? t.parts[e]! : { elements: per, read: async () => (await readAll(t)).subarray(e * per, (e + 1) * per) };
  const parts: WeightPart[] = [];
  for (let e = 0; e < X; e++) parts.push(perExpert(gate, e), perExpert(up, e));
  const shape = [X, 2 * up.shape[1]!, ...up.shape.slice(2)];
  return ctx.g.weight(`${p}.fc1_concat.${kind}`, shape, parts);
}

function lowerHubmoeMoe(ctx: LowerContext, x2: string, logits: string, j: number, op: MoeOp): string {
  const p = `blocks.${j}.moe`;
  const e = op.expert;
  const inputs = [
    x2,
    logits,
    concatenated(ctx, j, op, 'weight'),
    e.bias ? concatenated(ctx, j, op, 'bias') : '',
    weight(ctx, `${p}.down.weight`),
    e.bias ? weight(ctx, `${p}.down.bias`) : '',
  ];
  const scap = fusedExpertScap(ctx, j, op);
  if (scap) {
    // Input-major weights: a pruned input element is then a whole weight row, which decode skips.
    inputs[2] = inputMajor(ctx, j, op, 'fc1');
    inputs[3] = scap.fc1Bias;
    inputs[4] = inputMajor(ctx, j, op, 'fc2');
    inputs[5] = scap.fc2Bias;
    inputs.push(scap.fc1, scap.fc2);
  }
  return ctx.g.op(
    'MoE',
    inputs,
    {
      k: op.top_k,
      routing: op.router.act,
      renormalize: op.router.renormalize ? 1 : 0,
      activation: e.act,
      glu: e.glu ? 1 : 0,
      ...(scap ? { layout: 'input_major' } : {}),
    },
    HUBMOE_DOMAIN,
  );
}

/**
 * The MoE op's weights in its input-major layout: fc1 [X, H, F1] (each expert's gate then up
 * projection, transposed) or fc2 [X, I, H] (each expert's down projection, transposed).
 */
function inputMajor(ctx: LowerContext, j: number, op: MoeOp, which: 'fc1' | 'fc2'): string {
  const p = `blocks.${j}.moe`;
  const names = which === 'fc2' ? ['down'] : op.expert.glu ? ['gate', 'up'] : ['up'];
  const ts = names.map((n) => tensor(ctx, `${p}.${n}.weight`));
  const X = op.experts;
  const [, rows, cols] = ts[0]!.shape as [number, number, number];
  const R = rows * ts.length; // output features of the (concatenated) projection
  const parts: WeightPart[] = Array.from({ length: X }, (_, e) => ({
    elements: R * cols,
    file: ts[0]!.parts[ts[0]!.parts.length === X ? e : 0]?.file,
    read: async () => {
      const m = new Float32Array(R * cols);
      for (let i = 0; i < ts.length; i++) m.set(await readExpert(ts[i]!, e), i * rows * cols);
      return transpose2d(m, R, cols);
    },
  }));
  return ctx.g.weight(`${p}.${which}.input_major`, [X, cols, R], parts);
}

/**
 * SCAP of the experts of a pruned model on the fused target: the MoE op's fc1_scap / fc2_scap inputs
 * ([X, 2]: each expert's mode and threshold; (0, −1) keeps everything) and the biases with each
 * expert's m·W·1 folded in. Undefined when no expert input of this block is pruned.
 */
function fusedExpertScap(ctx: LowerContext, j: number, op: MoeOp): { fc1: string; fc2: string; fc1Bias: string; fc2Bias: string } | undefined {
  const scap = ctx.scap;
  if (!scap || scap.kind !== 'pruned') return undefined;
  const p = `blocks.${j}.moe`;
  const X = op.experts;
  const values = (stage: 'up' | 'down') =>
    Array.from({ length: X }, (_, e) => {
      const site = `${p}.${e}.${stage}`;
      const v = scap.sites[site];
      if (v) {
        const weights = stage === 'down' ? [`${p}.down.weight#${e}`] : op.expert.glu ? [`${p}.gate.weight#${e}`, `${p}.up.weight#${e}`] : [`${p}.up.weight#${e}`];
        scap.registered.push({ site, type: stage === 'down' ? 'expert_down' : 'expert_up', weights });
      }
      return v;
    });
  const up = values('up');
  const down = values('down');
  if (!up.some(Boolean) && !down.some(Boolean)) return undefined;
  const { g } = ctx;
  const table = (name: string, v: typeof up): string => {
    if (!v.some(Boolean)) return '';
    const data = new Float32Array(2 * X);
    v.forEach((s, e) => {
      data[2 * e] = s ? s.mode : 0;
      data[2 * e + 1] = s ? s.threshold : -1;
    });
    return g.weight(name, [X, 2], [{ elements: 2 * X, read: async () => data }], TensorDataType.FLOAT);
  };
  const bias = (t: string, e: number, m: number) => rowSumPart(ctx, `${p}.${t}.weight`, m, e, op.expert.bias ? `${p}.${t}.bias` : undefined);
  const anyShift = (v: typeof up) => v.some((s) => s && s.mode !== 0);
  let fc1Bias = op.expert.bias ? concatenated(ctx, j, op, 'bias') : '';
  if (anyShift(up)) {
    const parts: WeightPart[] = [];
    for (let e = 0; e < X; e++) {
      const m = up[e]?.mode ?? 0;
      if (op.expert.glu) parts.push(bias('gate', e, m));
      parts.push(bias('up', e, m));
    }
    const F1 = parts.reduce((a, q) => a + q.elements, 0) / X;
    fc1Bias = g.weight(`${p}.fc1_concat.scap_bias`, [X, F1], parts);
  }
  let fc2Bias = op.expert.bias ? weight(ctx, `${p}.down.bias`) : '';
  if (anyShift(down)) {
    const parts = Array.from({ length: X }, (_, e) => bias('down', e, down[e]?.mode ?? 0));
    fc2Bias = g.weight(`${p}.down.scap_bias`, [X, parts[0]!.elements], parts);
  }
  return { fc1: table(`${p}.fc1_scap`, up), fc2: table(`${p}.fc2_scap`, down), fc1Bias, fc2Bias };
}

function lowerGatherMoe(ctx: LowerContext, x2: string, logits: string, j: number, op: MoeOp): string {
  const { g } = ctx;
  const p = `blocks.${j}.moe`;
  const scores = op.router.act === 'softmax' ? g.op('Softmax', [logits], { axis: -1 }) : g.op('Sigmoid', [logits]);
  let [topv, topi] = g.node('TopK', [scores, g.ints([op.top_k])], { attrs: { axis: -1, largest: 1, sorted: 1 }, outputs: 2 }) as [string, string];
  if (op.router.renormalize) topv = g.op('Div', [topv, g.op('ReduceSum', [topv, g.ints([-1])], { keepdims: 1 })]);
  // Dense routing weights [T, X]: zero except at the chosen experts.
  const routing = g.op('ScatterElements', [g.op('Mul', [scores, g.scalar(0)]), topi, topv], { axis: 1 });
  let out = g.op('Mul', [x2, g.scalar(0)]);
  for (let e = 0; e < op.experts; e++) {
    g.scope(`expert${e}`, () => {
      const we = g.op('Gather', [routing, g.int(e)], { axis: 1 }); // [T]
      const rows = g.op('Reshape', [g.op('NonZero', [we]), g.ints([-1])]); // token indices routed to e
      const xe = g.op('Gather', [x2, rows], { axis: 0 });
      const lin = (name: string, v: Sparsified): string => {
        let y = g.op('MatMul', [v.x, expertTransposed(ctx, `${p}.${name}.weight`, e)]);
        if (has(ctx, `${p}.${name}.bias`)) y = g.op('Add', [y, expertRow(ctx, `${p}.${name}.bias`, e)]);
        const correction = expertModeCorrection(ctx, v, `${p}.${name}.weight`, e);
        return correction ? g.op('Add', [y, correction]) : y;
      };
      const xs = sparsify(ctx, xe, `${p}.${e}.up`, 'expert_up', op.expert.glu ? [`${p}.gate.weight#${e}`, `${p}.up.weight#${e}`] : [`${p}.up.weight#${e}`]);
      const up = lin('up', xs);
      const h = op.expert.glu ? g.op('Mul', [activate(g, lin('gate', xs), op.expert.act), up]) : activate(g, up, op.expert.act);
      const hs = sparsify(ctx, h, `${p}.${e}.down`, 'expert_down', [`${p}.down.weight#${e}`]);
      const ye = g.op('Mul', [lin('down', hs), g.op('Unsqueeze', [g.op('Gather', [we, rows], { axis: 0 }), g.ints([1])])]);
      out = g.op('ScatterND', [out, g.op('Unsqueeze', [rows, g.ints([1])]), ye], { reduction: 'add' });
    });
  }
  return out;
}
