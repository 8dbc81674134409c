/**
 * Builds the decoder graph for a ModelSpec: token embedding, the residual sub-blocks with their
 * caches, final norm and LM head, with transformers.js input/output names:
 *
 *   inputs   input_ids [batch_size, sequence_length] int64,
 *            attention_mask [batch_size, total_sequence_length] int64,
 *            past_conv.{j} [batch_size, d_inner, d_conv-1], past_ssm.{j} [batch_size, d_inner, d_state]
 *            (Mamba blocks), past_key_values.{j}.key|value [batch_size, kv_heads, past_sequence_length,
 *            head_dim] (attention blocks)
 *   outputs  logits [batch_size, sequence_length, vocab] fp32, present_conv.{j}, present_ssm.{j},
 *            present.{j}.key|value; the fused static-cache graph also next_token [batch_size] int64 (each
 *            row's greedy token at the last position)
 *
 * `j` is the sub-block index in hubmoe.json. Caches are in the model's float type. The static-cache
 * graph (`staticCache`) takes attention_mask [batch_size, max_length] and cache_position [sequence_length],
 * and its KV caches are [batch_size, kv_heads, max_length, head_dim] in and out.
 */
import type { CanonicalTensors } from '../schema/canonical.js';
import type { ModelSpec, NormSpec } from '../schema/spec.js';
import { GraphBuilder, HUBMOE_DOMAIN, MS_DOMAIN } from './graph.js';
import type { FloatDType } from './graph.js';
import { HubmoeError } from '../errors.js';
import { TensorDataType } from './proto.js';
import { lowerAttention } from './lower/attention.js';
import { has, transposed, weight } from './lower/context.js';
import type { ExportTarget, LowerContext } from './lower/context.js';
import type { ScapLowering } from './lower/scap.js';
import { lowerMamba } from './lower/mamba.js';
import { lowerMlp } from './lower/mlp.js';
import { lowerMoe } from './lower/moe.js';
import { lowerNorm, lowerSkipNorm } from './lower/norm.js';

const F32_MIN = -3.4028234663852886e38;

export interface BuildOptions {
  dtype: FloatDType;
  target: ExportTarget;
  options?: Record<string, string | number | boolean>;
  /** SCAP lowering (the calibration graph); a pruned spec's own sites are used otherwise. */
  scap?: ScapLowering;
  /**
   * Only blocks [from, to) (SCAP calibration, one block at a time): the graph takes `input_ids` when
   * `from` is 0 and `hidden_in` [batch_size, sequence_length, hidden] otherwise, declares the caches of
   * those blocks only, and returns the residual stream after them as `hidden_out` instead of logits.
   */
  range?: { from: number; to: number };
  /**
   * The static-cache graph (`onnx/<name>_static.onnx`): KV caches are fixed buffers
   * [batch_size, kv_heads, max_length, head_dim] written at the slots `cache_position` names, the mask
   * covers the whole buffer ([batch_size, max_length]: 1 for a real token in that slot, 0 for padding
   * and slots not written yet), and no value's shape depends on how many tokens came before. One
   * graph serves prefill and decode; its decode step has fixed shapes, so it can be captured as a CUDA
   * graph. Same weights, in the same order, as the dynamic graph: it shares that graph's external data.
   */
  staticCache?: boolean;
}

/** Cache tensors of one block as the graph declares them. */
export interface CacheSpec {
  /** The block it belongs to. */
  block: number;
  input: string;
  output: string;
  /** Shape with `batch_size` and, for KV caches, a past/total length dim. */
  shape: Array<number | string>;
}

export function cacheSpecs(spec: ModelSpec, target: ExportTarget = 'portable', staticCache = false): Array<CacheSpec & { fp32: boolean }> {
  const out: Array<CacheSpec & { fp32: boolean }> = [];
  spec.blocks.forEach((b, j) => {
    const op = b.op;
    if (op.kind === 'mamba') {
      out.push({ block: j, input: `past_conv.${j}`, output: `present_conv.${j}`, shape: ['batch_size', op.d_inner, op.d_conv - 1], fp32: false });
      // The fused scan keeps its state in fp32 whatever the model dtype.
      out.push({ block: j, input: `past_ssm.${j}`, output: `present_ssm.${j}`, shape: ['batch_size', op.d_inner, op.d_state], fp32: target === 'fused' });
    } else if (op.kind === 'attention') {
      for (const kv of ['key', 'value']) {
        const len = staticCache ? 'max_length' : 'past_sequence_length';
        out.push({ block: j, input: `past_key_values.${j}.${kv}`, output: `present.${j}.${kv}`, shape: ['batch_size', op.kv_heads, len, op.head_dim], fp32: false });
      }
    }
  });
  return out;
}

export function buildGraph(spec: ModelSpec, tensors: CanonicalTensors, opts: BuildOptions): GraphBuilder {
  const g = new GraphBuilder(opts.dtype);
  const F = g.floatType;
  const range = opts.range ?? { from: 0, to: spec.blocks.length };
  const inRange = (j: number): boolean => j >= range.from && j < range.to;
  const ids = range.from === 0 ? g.input('input_ids', TensorDataType.INT64, ['batch_size', 'sequence_length']) : undefined;
  const hiddenIn = ids ? undefined : g.input('hidden_in', F, ['batch_size', 'sequence_length', spec.hidden]);
  const st = opts.staticCache === true;
  if (st && opts.range) throw new HubmoeError('UNSUPPORTED', 'the static-cache graph is built for the whole model');
  const mask = g.input('attention_mask', TensorDataType.INT64, ['batch_size', st ? 'max_length' : 'total_sequence_length']);
  const cachePos = st ? g.input('cache_position', TensorDataType.INT64, ['sequence_length']) : undefined;
  const caches = cacheSpecs(spec, opts.target, st).filter((c) => inRange(c.block));
  for (const c of caches) g.input(c.input, c.fp32 ? TensorDataType.FLOAT : F, c.shape);

  // The current positions' mask, [B, T, 1], in the float type.
  const seqLen = st ? undefined : g.op('Shape', [ids ?? hiddenIn!], { start: 1, end: 2 });
  const maskCur = g.scope('mask', () => {
    const maskF = g.op('Cast', [mask], { to: F });
    const cur = cachePos
      ? g.op('Gather', [maskF, cachePos], { axis: 1 })
      : g.op('Slice', [maskF, g.op('Neg', [seqLen!]), g.ints([Number.MAX_SAFE_INTEGER]), g.ints([1])]);
    return g.op('Unsqueeze', [cur, g.ints([2])]);
  });
  const ctx: LowerContext = { g, spec, tensors, target: opts.target, maskCur, options: opts.options ?? {}, scap: opts.scap };
  if (ctx.scap?.kind === 'calibrate' && opts.target === 'fused') {
    throw new HubmoeError('UNSUPPORTED', 'the SCAP calibration graph is built for the portable target');
  }
  if (!ctx.scap && spec.scap) {
    const sites = Object.fromEntries(Object.entries(spec.scap.sites).map(([k, v]) => [k, { mode: v.mode, threshold: v.threshold }]));
    ctx.scap = { kind: 'pruned', sites, registered: [] };
  }
  const groups = new Set<number>();
  spec.blocks.forEach((b, j) => {
    if (inRange(j) && b.op.kind === 'attention') groups.add(b.op.heads / b.op.kv_heads);
  });
  if (groups.size) {
    ctx.attnBias = g.scope('attn_bias', () => {
      if (cachePos && opts.target === 'fused') {
        // ai.hubmoe StaticAttentionMask: the bias below and the cache write's slots in one node (about twenty
        // elementwise nodes otherwise, each a launch of a few microseconds at one decode token).
        const bias = new Map<number, string>();
        [...groups].forEach((G, i) => {
          if (i === 0) {
            const [b, isNew, source] = g.node('StaticAttentionMask', [mask, cachePos], { attrs: { groups: G }, outputs: 3, domain: HUBMOE_DOMAIN });
            ctx.cacheWrite = { isNew: isNew!, source: source! };
            bias.set(G, b!);
          } else {
            bias.set(G, g.op('StaticAttentionMask', [mask, cachePos], { groups: G }, HUBMOE_DOMAIN));
          }
        });
        return (G: number) => bias.get(G)!;
      }
      // allowed[b, g·T + i, s] = mask[b, s] && s <= position of query i, as fp32 0 / -max, shaped
      // [B, 1, G·T, S]: rows for the G query heads that share a KV head, each the T queries' rows.
      let qPos: string;
      let kPos: string;
      if (cachePos) {
        // Slot numbers 0…S-1 without a Shape node (shape arithmetic would run on the host and keep the
        // step from being captured): the running count of a row of ones as long as the mask.
        const ones = g.op('Add', [g.op('Mul', [g.op('Gather', [mask, g.int(0)], { axis: 0 }), g.int(0)]), g.int(1)]);
        kPos = g.op('Sub', [g.op('CumSum', [ones, g.int(0)]), g.int(1)]);
        qPos = cachePos;
        // The run's tokens go to slots first…last (consecutive cache positions).
        const first = g.op('Gather', [cachePos, g.int(0)], { axis: 0 });
        const last = g.op('Gather', [cachePos, g.int(-1)], { axis: 0 });
        const source = g.op('Max', [g.op('Min', [g.op('Sub', [kPos, first]), g.op('Sub', [last, first])]), g.int(0)]);
        const isNew = g.op('And', [g.op('GreaterOrEqual', [kPos, first]), g.op('LessOrEqual', [kPos, last])]);
        ctx.cacheWrite = { isNew: g.op('Reshape', [isNew, g.ints([1, 1, -1, 1])]), source };
      } else {
        const total = g.op('Shape', [mask], { start: 1, end: 2 });
        const past = g.op('Sub', [total, seqLen!]);
        const scalar = (v: string): string => g.op('Squeeze', [v, g.ints([0])]);
        qPos = g.op('Range', [scalar(past), scalar(total), g.int(1)]);
        kPos = g.op('Range', [g.int(0), scalar(total), g.int(1)]);
      }
      const pad = g.op('Unsqueeze', [g.op('Cast', [mask], { to: TensorDataType.BOOL }), g.ints([1, 2])]);
      const bias = new Map<number, string>();
      for (const G of groups) {
        const qRows = G === 1 ? qPos : g.op('Reshape', [g.op('Expand', [g.op('Unsqueeze', [qPos, g.ints([0])]), g.ints([G, 1])]), g.ints([-1])]);
        const causal = g.op('LessOrEqual', [g.op('Unsqueeze', [kPos, g.ints([0])]), g.op('Unsqueeze', [qRows, g.ints([1])])]);
        const allowed = g.op('And', [causal, pad]);
        bias.set(G, g.op('Where', [allowed, g.scalar(0, TensorDataType.FLOAT), g.scalar(F32_MIN, TensorDataType.FLOAT)]));
      }
      return (G: number) => bias.get(G)!;
    });
  }

  let h = ids ? g.scope('embed', () => g.op('Gather', [weight(ctx, 'embed.weight'), ids], { axis: 0 })) : hiddenIn!;
  // The residual stream is h + pending: the last block's output is added where the next norm reads it, so that
  // the fused target does the add and the norm in one node (lowerSkipNorm).
  let pending: string | undefined;
  const normed = (prefix: string, norm: NormSpec): string => {
    const skip = pending === undefined ? undefined : lowerSkipNorm(ctx, h, pending, prefix, norm);
    if (skip) {
      h = skip.sum;
    } else if (pending !== undefined) {
      h = g.op('Add', [h, pending]);
    }
    pending = undefined;
    return skip ? skip.n : lowerNorm(ctx, h, prefix, norm);
  };
  spec.blocks.forEach((block, j) => {
    if (!inRange(j)) return;
    g.scope(`blocks.${j}`, () => {
      const n = normed(`blocks.${j}.norm`, block.norm);
      const op = block.op;
      let y: string;
      switch (op.kind) {
        case 'mamba': {
          const r = lowerMamba(ctx, n, j, op, { pastConv: `past_conv.${j}`, pastSsm: `past_ssm.${j}` });
          g.output(`present_conv.${j}`, r.presentConv, F, ['batch_size', op.d_inner, op.d_conv - 1]);
          g.output(`present_ssm.${j}`, r.presentSsm, opts.target === 'fused' ? TensorDataType.FLOAT : F, ['batch_size', op.d_inner, op.d_state]);
          y = r.y;
          break;
        }
        case 'attention': {
          const r = lowerAttention(ctx, n, j, op, { pastKey: `past_key_values.${j}.key`, pastValue: `past_key_values.${j}.value` });
          const shape = ['batch_size', op.kv_heads, st ? 'max_length' : 'total_sequence_length', op.head_dim];
          g.output(`present.${j}.key`, r.presentKey, F, shape);
          g.output(`present.${j}.value`, r.presentValue, F, shape);
          y = r.y;
          break;
        }
        case 'mlp':
          y = lowerMlp(ctx, n, j, op);
          break;
        case 'moe':
          y = lowerMoe(ctx, n, j, op);
          break;
      }
      pending = y;
    });
  });

  if (opts.range) {
    if (pending !== undefined) h = g.op('Add', [h, pending]);
    g.output('hidden_out', h, F, ['batch_size', 'sequence_length', spec.hidden]);
    return g;
  }
  let logits = g.scope('head', () => {
    const n = normed('final_norm', spec.final_norm);
    let out: string;
    if (spec.tie_embeddings && st) {
      // FusedMatMul with transB reads the embedding matrix in place without flattening (whose shape
      // arithmetic would run on the host).
      out = g.op('FusedMatMul', [n, weight(ctx, 'embed.weight')], { transB: 1, alpha: { float: 1.0 } }, MS_DOMAIN);
    } else if (spec.tie_embeddings) {
      // Gemm with transB reads the embedding matrix in place, so tied weights are stored once.
      const flat = g.op('Reshape', [n, g.ints([-1, spec.hidden])]);
      const prod = g.op('Gemm', [flat, weight(ctx, 'embed.weight')], { transB: 1 });
      const shape = g.op('Concat', [g.op('Shape', [ids!]), g.ints([spec.vocab.padded_size])], { axis: 0 });
      out = g.op('Reshape', [prod, shape]);
    } else {
      out = g.op('MatMul', [n, transposed(ctx, 'lm_head.weight')]);
    }
    if (has(ctx, 'lm_head.bias')) out = g.op('Add', [out, weight(ctx, 'lm_head.bias')]);
    return out;
  });
  if (F !== TensorDataType.FLOAT) logits = g.op('Cast', [logits], { to: TensorDataType.FLOAT });
  g.output('logits', logits, TensorDataType.FLOAT, ['batch_size', 'sequence_length', spec.vocab.padded_size]);
  if (st && opts.target === 'fused') {
    // Each row's greedy token at the last position, chosen on the device (ai.hubmoe NextToken): a greedy decode
    // step then copies B token ids to the host instead of B × vocab logits.
    g.output('next_token', g.op('NextToken', [logits], { vocab: spec.vocab.size }, HUBMOE_DOMAIN), TensorDataType.INT64, ['batch_size']);
  }
  if (ctx.scap?.kind === 'pruned') {
    const met = new Set(ctx.scap.registered.map((r) => r.site));
    const unknown = Object.keys(ctx.scap.sites).filter((site) => !met.has(site));
    if (unknown.length) {
      throw new HubmoeError('BAD_SPEC', `hubmoe.json: scap.sites names ${unknown.length} input(s) this model does not have: ${unknown.slice(0, 5).join(', ')}${unknown.length > 5 ? ', …' : ''}`);
    }
  }
  return g;
}
