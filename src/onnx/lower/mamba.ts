/**
 * Lowering of a Mamba-1 mixer with ONNX Runtime's built-in contrib ops (the portable target):
 *
 *   u, z  = split(in_proj(x));  u *= mask
 *   u     = silu(causal_conv(u))             CausalConvWithState, state [B, E, K-1]
 *   u    *= mask
 *   dt, B, C = split(x_proj(u))              (+ Jamba's RMSNorms on each)
 *   Δ     = softplus(dt_proj(dt))
 *   y     = scan(u, Δ, A, B, C)              LinearAttention, update_rule=gated, one head per channel:
 *                                            key = B tiled over channels, value = Δ·u, decay = Δ·A,
 *                                            query = C shared by all heads (inverse GQA), scale 1
 *   y     = (y + D·u) · silu(z);  out = out_proj(y)
 *
 * The fused target replaces everything between in_proj and out_proj by one ai.hubmoe MambaMixer op, whose scan
 * state is fp32 whatever the model dtype. (Models converted before MambaMixer existed use its parts as separate
 * nodes: MambaConv, SplitRMSNorm and SelectiveScan; the op library keeps them.)
 *
 * The padding mask is applied to u after in_proj (not to the mixer input), so padded positions feed
 * zeros to the convolution exactly like an empty conv state, and a padded row equals the row alone.
 */
import type { MambaOp } from '../../schema/spec.js';
import { HUBMOE_DOMAIN, MS_DOMAIN } from '../graph.js';
import { TensorDataType } from '../proto.js';
import { linear, mapped, transposed, weight } from './context.js';
import { sparseLinear, sparsify } from './scap.js';
import type { LowerContext } from './context.js';
import { lowerNorm } from './norm.js';

export interface MambaCache {
  pastConv: string;
  pastSsm: string;
}

export interface MambaResult {
  y: string;
  presentConv: string;
  presentSsm: string;
}

export function lowerMamba(ctx: LowerContext, x: string, j: number, op: MambaOp, cache: MambaCache): MambaResult {
  const { g } = ctx;
  const p = `blocks.${j}.mamba`;
  const E = op.d_inner;
  const N = op.d_state;
  const R = op.dt_rank;
  const xz = sparseLinear(ctx, sparsify(ctx, x, `${p}.in_proj`, 'mamba_in', [`${p}.in_proj.weight`]), `${p}.in_proj`);
  if (ctx.target === 'fused') {
    // ai.hubmoe MambaMixer: everything between in_proj and out_proj in one node (the split, masks and causal conv,
    // x_proj, the dt/B/C split and Jamba's norms, dt_proj, and the scan with softplus, D·u and the SiLU(z) gate; at one
    // decode token three launches instead of the six of MambaConv, MatMul, SplitRMSNorm, MatMul and SelectiveScan).
    const f32 = TensorDataType.FLOAT;
    const w = (n: string): string => weight(ctx, `${p}.${n}.weight`);
    const [y0, presentConv, presentSsm] = g.node(
      'MambaMixer',
      [
        xz,
        ctx.maskCur,
        w('conv1d'),
        op.conv_bias ? weight(ctx, `${p}.conv1d.bias`) : '',
        cache.pastConv,
        transposed(ctx, `${p}.x_proj.weight`),
        transposed(ctx, `${p}.dt_proj.weight`),
        weight(ctx, `${p}.dt_proj.bias`, f32),
        mapped(ctx, `${p}.A_log`, `${p}.A`, (v) => v.map((a) => -Math.exp(a)), f32),
        weight(ctx, `${p}.D`, f32),
        cache.pastSsm,
        ...(op.inner_norms ? [w('dt_norm'), w('b_norm'), w('c_norm')] : []),
      ],
      { attrs: { epsilon: { float: op.eps } }, outputs: 3, domain: HUBMOE_DOMAIN },
    ) as [string, string, string];
    const ys = sparsify(ctx, y0, `${p}.out_proj`, 'mamba_out', [`${p}.out_proj.weight`]);
    return { y: sparseLinear(ctx, ys, `${p}.out_proj`, { gemv: true }), presentConv, presentSsm };
  }
  const [u0, z] = g.node('Split', [xz, g.ints([E, E])], { attrs: { axis: -1 }, outputs: 2 }) as [string, string];
  const u1 = g.op('Mul', [u0, ctx.maskCur]);
  const convInputs = [g.op('Transpose', [u1], { perm: [0, 2, 1] }), weight(ctx, `${p}.conv1d.weight`)];
  convInputs.push(op.conv_bias ? weight(ctx, `${p}.conv1d.bias`) : '');
  convInputs.push(cache.pastConv);
  const [conv, presentConv] = g.node('CausalConvWithState', convInputs, {
    attrs: { activation: 'silu', ndim: 1 },
    outputs: 2,
    domain: MS_DOMAIN,
  }) as [string, string];
  const u = g.op('Mul', [g.op('Transpose', [conv], { perm: [0, 2, 1] }), ctx.maskCur]);
  const xdbl = linear(ctx, u, `${p}.x_proj`);
  let [dt, B, C] = g.node('Split', [xdbl, g.ints([R, N, N])], { attrs: { axis: -1 }, outputs: 3 }) as [string, string, string];
  if (op.inner_norms) {
    const rms = { kind: 'rms' as const, eps: op.eps, bias: false };
    dt = lowerNorm(ctx, dt, `${p}.dt_norm`, rms);
    B = lowerNorm(ctx, B, `${p}.b_norm`, rms);
    C = lowerNorm(ctx, C, `${p}.c_norm`, rms);
  }
  const delta = g.op('Softplus', [linear(ctx, dt, `${p}.dt_proj`)]);
  const A = mapped(ctx, `${p}.A_log`, `${p}.A`, (v) => v.map((a) => -Math.exp(a)));
  // decay[b,t,e,n] = Δ[b,t,e]·A[e,n]; key[b,t,e,n] = B[b,t,n]; both flattened to [B, T, E·N].
  const flat = g.ints([0, 0, E * N]);
  const decay = g.op('Reshape', [g.op('Mul', [g.op('Unsqueeze', [delta, g.ints([3])]), A]), flat]);
  const key = g.op('Reshape', [g.op('Expand', [g.op('Unsqueeze', [B, g.ints([2])]), g.ints([1, 1, E, 1])]), flat]);
  const value = g.op('Mul', [delta, u]);
  const past = g.op('Unsqueeze', [cache.pastSsm, g.ints([3])]);
  const [scan, present] = g.node('LinearAttention', [C, key, value, past, decay], {
    attrs: { q_num_heads: 1, kv_num_heads: E, update_rule: 'gated', scale: { float: 1.0 } },
    outputs: 2,
    domain: MS_DOMAIN,
  }) as [string, string];
  const withSkip = g.op('Add', [scan, g.op('Mul', [u, weight(ctx, `${p}.D`)])]);
  const gated = g.op('Mul', [withSkip, g.op('Mul', [z, g.op('Sigmoid', [z])])]);
  const y = sparseLinear(ctx, sparsify(ctx, gated, `${p}.out_proj`, 'mamba_out', [`${p}.out_proj.weight`]), `${p}.out_proj`, { gemv: true });
  const presentSsm = g.op('Squeeze', [present, g.ints([3])]);
  return { y, presentConv, presentSsm };
}
