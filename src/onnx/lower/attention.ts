/**
 * Lowering of causal grouped-query attention without positional encoding (Jamba), with plain ONNX
 * ops: scores and softmax in fp32 whatever the model dtype, the additive bias carrying both the
 * causal and the padding mask, query heads grouped per KV head (head h reads KV head h / (A/KV)).
 * KV caches are [batch, kv_heads, past_len, head_dim], or fixed [batch, kv_heads, max_length, head_dim] buffers
 * written at `cache_position` in the static-cache graph.
 */
import type { AttentionOp } from '../../schema/spec.js';
import { TensorDataType } from '../proto.js';
import type { LowerContext } from './context.js';
import { sparseLinear, sparsify } from './scap.js';

export interface AttentionCache {
  pastKey: string;
  pastValue: string;
}

export interface AttentionResult {
  y: string;
  presentKey: string;
  presentValue: string;
}

export function lowerAttention(ctx: LowerContext, x: string, j: number, op: AttentionOp, cache: AttentionCache): AttentionResult {
  const { g } = ctx;
  const p = `blocks.${j}.attn`;
  const { heads: A, kv_heads: KV, head_dim: Dh } = op;
  const G = A / KV;
  const split = (v: string, n: number): string =>
    g.op('Transpose', [g.op('Reshape', [v, g.ints([0, 0, n, Dh])])], { perm: [0, 2, 1, 3] });
  const xs = sparsify(ctx, x, `${p}.qkv`, 'attn_qkv', [`${p}.q.weight`, `${p}.k.weight`, `${p}.v.weight`]);
  const q = split(sparseLinear(ctx, xs, `${p}.q`, { gemv: true }), A);
  const k = split(sparseLinear(ctx, xs, `${p}.k`, { gemv: true }), KV);
  const v = split(sparseLinear(ctx, xs, `${p}.v`, { gemv: true }), KV);
  let presentKey: string;
  let presentValue: string;
  if (ctx.cacheWrite) {
    const { isNew, source } = ctx.cacheWrite;
    presentKey = g.op('Where', [isNew, g.op('Gather', [k, source], { axis: 2 }), cache.pastKey]);
    presentValue = g.op('Where', [isNew, g.op('Gather', [v, source], { axis: 2 }), cache.pastValue]);
  } else {
    presentKey = g.op('Concat', [cache.pastKey, k], { axis: 2 });
    presentValue = g.op('Concat', [cache.pastValue, v], { axis: 2 });
  }
  // Heads h = kv·G + g: q [B, A, T, Dh] → [B, KV, G·T, Dh], so that both products are batched over [B, KV]
  // with equal batch dims (strided batched GEMMs; a broadcast batch would make ONNX Runtime's CUDA MatMul
  // stage per-batch pointer arrays through host memory, which a replayed CUDA graph must not read).
  const q4 = g.op('Reshape', [q, g.ints([0, KV, -1, Dh])]);
  const kT = g.op('Transpose', [presentKey], { perm: [0, 1, 3, 2] });
  let scores = g.op('MatMul', [q4, kT]);
  const fp16 = g.floatType === TensorDataType.FLOAT16;
  if (fp16) scores = g.op('Cast', [scores], { to: TensorDataType.FLOAT });
  scores = g.op('Mul', [scores, g.scalar(1 / Math.sqrt(Dh), TensorDataType.FLOAT)]);
  scores = g.op('Add', [scores, ctx.attnBias!(G)]);
  let probs = g.op('Softmax', [scores], { axis: -1 });
  if (fp16) probs = g.op('Cast', [probs], { to: TensorDataType.FLOAT16 });
  const out4 = g.op('MatMul', [probs, presentValue]);
  const merged = g.op('Reshape', [g.op('Transpose', [g.op('Reshape', [out4, g.ints([0, A, -1, Dh])])], { perm: [0, 2, 1, 3] }), g.ints([0, 0, A * Dh])]);
  return { y: sparseLinear(ctx, sparsify(ctx, merged, `${p}.o`, 'attn_o', [`${p}.o.weight`]), `${p}.o`, { gemv: true }), presentKey, presentValue };
}
