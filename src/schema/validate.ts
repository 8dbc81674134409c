/**
 * Validation of ModelSpec documents, run when hubmoe.json is written and when it is loaded.
 * Every problem is reported with the JSON path of the field at fault.
 */
import { HubmoeError } from '../errors.js';
import { ACTIVATIONS, FAMILIES, SCAP_LAYER_TYPES, SCHEMA_VERSION } from './spec.js';
import type { ModelSpec } from './spec.js';

class Checker {
  readonly problems: string[] = [];

  obj(v: unknown, path: string): Record<string, unknown> | undefined {
    if (v === null || typeof v !== 'object' || Array.isArray(v)) {
      this.problems.push(`${path} must be an object`);
      return undefined;
    }
    return v as Record<string, unknown>;
  }

  int(v: unknown, path: string, min = 1): void {
    if (!Number.isSafeInteger(v) || (v as number) < min) this.problems.push(`${path} must be an integer ≥ ${min} (got ${JSON.stringify(v)})`);
  }

  bool(v: unknown, path: string): void {
    if (typeof v !== 'boolean') this.problems.push(`${path} must be true or false (got ${JSON.stringify(v)})`);
  }

  num(v: unknown, path: string): void {
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) this.problems.push(`${path} must be a positive number (got ${JSON.stringify(v)})`);
  }

  oneOf(v: unknown, allowed: readonly unknown[], path: string): void {
    if (!allowed.includes(v)) this.problems.push(`${path} must be one of ${allowed.map((a) => JSON.stringify(a)).join(', ')} (got ${JSON.stringify(v)})`);
  }

  check(cond: boolean, message: string): void {
    if (!cond) this.problems.push(message);
  }
}

function checkNorm(c: Checker, v: unknown, path: string): void {
  const n = c.obj(v, path);
  if (!n) return;
  c.oneOf(n.kind, ['rms', 'layer'], `${path}.kind`);
  c.num(n.eps, `${path}.eps`);
  c.bool(n.bias, `${path}.bias`);
  if (n.kind === 'rms') c.check(n.bias === false, `${path}.bias must be false for an RMS norm`);
}

function checkOp(c: Checker, v: unknown, path: string): void {
  const op = c.obj(v, path);
  if (!op) return;
  switch (op.kind) {
    case 'mamba':
      for (const k of ['d_inner', 'd_state', 'd_conv', 'dt_rank']) c.int(op[k], `${path}.${k}`);
      for (const k of ['conv_bias', 'proj_bias', 'inner_norms']) c.bool(op[k], `${path}.${k}`);
      c.num(op.eps, `${path}.eps`);
      break;
    case 'attention':
      for (const k of ['heads', 'kv_heads', 'head_dim']) c.int(op[k], `${path}.${k}`);
      c.bool(op.qkv_bias, `${path}.qkv_bias`);
      c.bool(op.o_bias, `${path}.o_bias`);
      c.oneOf(op.positional, ['none'], `${path}.positional`);
      if (Number.isSafeInteger(op.heads) && Number.isSafeInteger(op.kv_heads)) {
        c.check((op.heads as number) % (op.kv_heads as number) === 0, `${path}: heads (${op.heads}) must be a multiple of kv_heads (${op.kv_heads})`);
      }
      break;
    case 'mlp':
      c.int(op.hidden, `${path}.hidden`);
      c.oneOf(op.act, ACTIVATIONS, `${path}.act`);
      c.bool(op.glu, `${path}.glu`);
      c.bool(op.bias, `${path}.bias`);
      break;
    case 'moe': {
      c.int(op.experts, `${path}.experts`);
      c.int(op.top_k, `${path}.top_k`);
      if (Number.isSafeInteger(op.experts) && Number.isSafeInteger(op.top_k)) {
        c.check((op.top_k as number) <= (op.experts as number), `${path}: top_k (${op.top_k}) exceeds experts (${op.experts})`);
      }
      const r = c.obj(op.router, `${path}.router`);
      if (r) {
        c.oneOf(r.act, ['softmax', 'sigmoid'], `${path}.router.act`);
        c.bool(r.renormalize, `${path}.router.renormalize`);
        c.bool(r.bias, `${path}.router.bias`);
      }
      const e = c.obj(op.expert, `${path}.expert`);
      if (e) {
        c.int(e.hidden, `${path}.expert.hidden`);
        c.oneOf(e.act, ACTIVATIONS, `${path}.expert.act`);
        c.bool(e.glu, `${path}.expert.glu`);
        c.bool(e.bias, `${path}.expert.bias`);
      }
      break;
    }
    default:
      c.problems.push(`${path}.kind must be one of "mamba", "attention", "mlp", "moe" (got ${JSON.stringify(op.kind)})`);
  }
}

function finite(c: Checker, v: unknown, path: string): void {
  if (typeof v !== 'number' || !Number.isFinite(v)) c.problems.push(`${path} must be a finite number (got ${JSON.stringify(v)})`);
}

/** The SCAP section of a pruned model: every site names a block that exists, with finite (m, t). */
function checkScap(c: Checker, v: unknown, blocks: number): void {
  const scap = c.obj(v, '$.scap');
  if (!scap) return;
  c.oneOf(scap.method, ['scap', 'teal'], '$.scap.method');
  c.oneOf(scap.mode_centering, ['auto', 'off'], '$.scap.mode_centering');
  const sites = c.obj(scap.sites, '$.scap.sites');
  if (!sites) return;
  for (const [name, value] of Object.entries(sites)) {
    const path = `$.scap.sites[${JSON.stringify(name)}]`;
    const block = /^blocks\.(\d+)\./.exec(name);
    c.check(block !== null && Number(block[1]) < blocks, `${path}: a site is named blocks.<j>.… with j below the block count ${blocks}`);
    const site = c.obj(value, path);
    if (!site) continue;
    c.oneOf(site.type, SCAP_LAYER_TYPES, `${path}.type`);
    finite(c, site.mode, `${path}.mode`);
    finite(c, site.threshold, `${path}.threshold`);
    c.check(Array.isArray(site.bias) && site.bias.every((b) => typeof b === 'string'), `${path}.bias must be a list of initializer names`);
    c.check(typeof site.target === 'number' && site.target >= 0 && site.target < 1, `${path}.target must be a sparsity in [0, 1) (got ${JSON.stringify(site.target)})`);
  }
}

/** Checks a parsed hubmoe.json; returns it typed, or throws a HubmoeError listing every problem. */
export function validateSpec(value: unknown, where = 'hubmoe.json'): ModelSpec {
  const c = new Checker();
  const s = c.obj(value, '$');
  if (s) {
    c.oneOf(s.schema, [SCHEMA_VERSION], '$.schema');
    c.oneOf(s.family, FAMILIES, '$.family');
    c.int(s.hidden, '$.hidden');
    const v = c.obj(s.vocab, '$.vocab');
    if (v) {
      c.int(v.size, '$.vocab.size');
      c.int(v.padded_size, '$.vocab.padded_size');
      if (Number.isSafeInteger(v.size) && Number.isSafeInteger(v.padded_size)) {
        c.check((v.padded_size as number) >= (v.size as number), '$.vocab.padded_size must be ≥ $.vocab.size');
      }
      for (const k of ['bos', 'pad']) {
        if (v[k] !== null) c.int(v[k], `$.vocab.${k}`, 0);
      }
      if (!Array.isArray(v.eos)) c.problems.push('$.vocab.eos must be a list of token ids');
      else v.eos.forEach((e, i) => c.int(e, `$.vocab.eos[${i}]`, 0));
    }
    c.bool(s.tie_embeddings, '$.tie_embeddings');
    c.bool(s.lm_head_bias, '$.lm_head_bias');
    if (!Array.isArray(s.blocks) || s.blocks.length === 0) c.problems.push('$.blocks must be a non-empty list');
    else {
      s.blocks.forEach((b, j) => {
        const blk = c.obj(b, `$.blocks[${j}]`);
        if (!blk) return;
        checkNorm(c, blk.norm, `$.blocks[${j}].norm`);
        checkOp(c, blk.op, `$.blocks[${j}].op`);
      });
    }
    checkNorm(c, s.final_norm, '$.final_norm');
    const src = c.obj(s.source, '$.source');
    if (src) {
      c.oneOf(src.format, ['safetensors', 'pytorch'], '$.source.format');
      if (!Array.isArray(src.files)) c.problems.push('$.source.files must be a list');
    }
    if (s.scap !== undefined) checkScap(c, s.scap, Array.isArray(s.blocks) ? s.blocks.length : 0);
  }
  if (c.problems.length) {
    throw new HubmoeError('BAD_SPEC', `${where} is not a valid hubmoe/1 model spec:\n  - ${c.problems.join('\n  - ')}`);
  }
  return value as ModelSpec;
}
