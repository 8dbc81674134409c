/**
 * Canonical tensor names and their shapes, derived from a ModelSpec. Weights keep the `[out, in]`
 * orientation of the source; stacked expert tensors are `[experts, out, in]`.
 */
import type { BlockSpec, ModelSpec, NormSpec } from './spec.js';

export interface CanonicalTensorSpec {
  name: string;
  shape: number[];
}

function normTensors(prefix: string, norm: NormSpec, hidden: number): CanonicalTensorSpec[] {
  const out = [{ name: `${prefix}.weight`, shape: [hidden] }];
  if (norm.kind === 'layer' && norm.bias) out.push({ name: `${prefix}.bias`, shape: [hidden] });
  return out;
}

export function blockTensors(spec: ModelSpec, j: number, block: BlockSpec = spec.blocks[j]!): CanonicalTensorSpec[] {
  const H = spec.hidden;
  const p = `blocks.${j}`;
  const out = normTensors(`${p}.norm`, block.norm, H);
  const t = (name: string, shape: number[]): void => {
    out.push({ name: `${p}.${name}`, shape });
  };
  const op = block.op;
  switch (op.kind) {
    case 'mamba': {
      const { d_inner: E, d_state: N, d_conv: K, dt_rank: R } = op;
      t('mamba.in_proj.weight', [2 * E, H]);
      if (op.proj_bias) t('mamba.in_proj.bias', [2 * E]);
      t('mamba.conv1d.weight', [E, 1, K]);
      if (op.conv_bias) t('mamba.conv1d.bias', [E]);
      t('mamba.x_proj.weight', [R + 2 * N, E]);
      if (op.inner_norms) {
        t('mamba.dt_norm.weight', [R]);
        t('mamba.b_norm.weight', [N]);
        t('mamba.c_norm.weight', [N]);
      }
      t('mamba.dt_proj.weight', [E, R]);
      t('mamba.dt_proj.bias', [E]);
      t('mamba.A_log', [E, N]);
      t('mamba.D', [E]);
      t('mamba.out_proj.weight', [H, E]);
      if (op.proj_bias) t('mamba.out_proj.bias', [H]);
      break;
    }
    case 'attention': {
      const q = op.heads * op.head_dim;
      const kv = op.kv_heads * op.head_dim;
      t('attn.q.weight', [q, H]);
      t('attn.k.weight', [kv, H]);
      t('attn.v.weight', [kv, H]);
      if (op.qkv_bias) {
        t('attn.q.bias', [q]);
        t('attn.k.bias', [kv]);
        t('attn.v.bias', [kv]);
      }
      t('attn.o.weight', [H, q]);
      if (op.o_bias) t('attn.o.bias', [H]);
      break;
    }
    case 'mlp': {
      const I = op.hidden;
      if (op.glu) t('mlp.gate.weight', [I, H]);
      t('mlp.up.weight', [I, H]);
      t('mlp.down.weight', [H, I]);
      if (op.bias) {
        if (op.glu) t('mlp.gate.bias', [I]);
        t('mlp.up.bias', [I]);
        t('mlp.down.bias', [H]);
      }
      break;
    }
    case 'moe': {
      const X = op.experts;
      const I = op.expert.hidden;
      t('moe.router.weight', [X, H]);
      if (op.router.bias) t('moe.router.bias', [X]);
      if (op.expert.glu) t('moe.gate.weight', [X, I, H]);
      t('moe.up.weight', [X, I, H]);
      t('moe.down.weight', [X, H, I]);
      if (op.expert.bias) {
        if (op.expert.glu) t('moe.gate.bias', [X, I]);
        t('moe.up.bias', [X, I]);
        t('moe.down.bias', [X, H]);
      }
      break;
    }
  }
  return out;
}

/** Every canonical tensor of a model, in a stable order. */
export function canonicalTensors(spec: ModelSpec): CanonicalTensorSpec[] {
  const V = spec.vocab.padded_size;
  const H = spec.hidden;
  const out: CanonicalTensorSpec[] = [{ name: 'embed.weight', shape: [V, H] }];
  spec.blocks.forEach((b, j) => out.push(...blockTensors(spec, j, b)));
  out.push(...normTensors('final_norm', spec.final_norm, H));
  if (!spec.tie_embeddings) out.push({ name: 'lm_head.weight', shape: [V, H] });
  if (spec.lm_head_bias) out.push({ name: 'lm_head.bias', shape: [V] });
  return out;
}

export function parameterCount(spec: ModelSpec): number {
  let n = 0;
  for (const t of canonicalTensors(spec)) n += t.shape.reduce((a, b) => a * b, 1);
  return n;
}

/** Parameters used per token (top-k of each MoE's experts). */
export function activeParameterCount(spec: ModelSpec): number {
  let n = parameterCount(spec);
  spec.blocks.forEach((b, j) => {
    if (b.op.kind !== 'moe') return;
    const idle = (b.op.experts - b.op.top_k) / b.op.experts;
    for (const t of blockTensors(spec, j, b)) {
      if (/\.moe\.(gate|up|down)\./.test(t.name)) n -= Math.round(t.shape.reduce((a, c) => a * c, 1) * idle);
    }
  });
  return n;
}
