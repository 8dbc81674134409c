/**
 * Helpers shared by the family converters: typed config reading with errors that name the field,
 * and a tensor mapper that maps source names onto canonical tensors (one part per source tensor,
 * stacked experts as one part per expert) and reports what it did not use.
 */
import { HubmoeError } from '../src/errors.js';
import type { TensorSource } from '../src/io/checkpoint.js';
import type { CanonicalPart, CanonicalTensors } from '../src/schema/canonical.js';
import type { JsonObject, SourceConfig } from './types.js';

export class ConfigReader {
  constructor(
    readonly src: SourceConfig,
    private readonly defaults: JsonObject = {},
  ) {}

  private fail(key: string, what: string): never {
    throw new HubmoeError('BAD_CONFIG', `${this.src.where}: ${key} ${what}`);
  }

  raw(key: string): unknown {
    const v = this.src.config[key];
    return v === undefined ? this.defaults[key] : v;
  }

  has(key: string): boolean {
    return this.src.config[key] !== undefined && this.src.config[key] !== null;
  }

  int(key: string, min = 1): number {
    const v = this.raw(key);
    if (v === undefined || v === null) this.fail(key, 'is missing');
    if (!Number.isSafeInteger(v) || (v as number) < min) this.fail(key, `must be an integer ≥ ${min}, got ${JSON.stringify(v)}`);
    return v as number;
  }

  optInt(key: string, min = 0): number | null {
    const v = this.raw(key);
    if (v === undefined || v === null) return null;
    if (!Number.isSafeInteger(v) || (v as number) < min) this.fail(key, `must be an integer ≥ ${min} or null, got ${JSON.stringify(v)}`);
    return v as number;
  }

  num(key: string): number {
    const v = this.raw(key);
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) this.fail(key, `must be a positive number, got ${JSON.stringify(v)}`);
    return v;
  }

  bool(key: string): boolean {
    const v = this.raw(key);
    if (typeof v !== 'boolean') this.fail(key, `must be true or false, got ${JSON.stringify(v)}`);
    return v;
  }

  str(key: string): string {
    const v = this.raw(key);
    if (typeof v !== 'string') this.fail(key, `must be a string, got ${JSON.stringify(v)}`);
    return v;
  }

  /** An int or a list of ints (eos_token_id); null/absent → []. */
  intList(key: string): number[] {
    const v = this.raw(key);
    if (v === undefined || v === null) return [];
    const list = Array.isArray(v) ? v : [v];
    if (!list.every((x) => Number.isSafeInteger(x) && x >= 0)) this.fail(key, `must be a token id or a list of token ids, got ${JSON.stringify(v)}`);
    return list as number[];
  }

  /** Rejects a config value the converter cannot honour. */
  require(cond: boolean, key: string, what: string): void {
    if (!cond) this.fail(key, what);
  }
}

/** Maps source tensors onto canonical names, remembering which source tensors were used. */
export class TensorMapper {
  private readonly out: CanonicalTensors = new Map();
  private readonly used = new Set<string>();

  constructor(
    readonly source: TensorSource,
    /** Normalised name → name in the source (for legacy renames). */
    private readonly names: Map<string, string> = new Map(source.names().map((n) => [n, n])),
  ) {}

  has(name: string): boolean {
    return this.names.has(name);
  }

  private real(name: string): string {
    const r = this.names.get(name);
    if (r === undefined) throw new HubmoeError('MISSING_TENSOR', `${this.source.label}: the checkpoint has no tensor ${name}`);
    return r;
  }

  shapeOf(name: string): number[] {
    return this.source.info(this.real(name)).shape;
  }

  /** A part reading a whole source tensor (checked against `expect` when given), or `count` elements from `start`. */
  part(name: string, start?: number, count?: number, expect?: number[]): CanonicalPart {
    const real = this.real(name);
    this.used.add(real);
    const info = this.source.info(real);
    if (expect && (expect.length !== info.shape.length || expect.some((d, i) => d !== info.shape[i]))) {
      throw new HubmoeError('BAD_SHAPE', `${this.source.label}: tensor ${real} has shape [${info.shape.join(', ')}], the config implies [${expect.join(', ')}]`);
    }
    const total = info.shape.reduce((a, b) => a * b, 1);
    const elements = count ?? total;
    return {
      elements,
      file: info.file,
      read: () => (start === undefined ? this.source.read(real) : this.source.read(real, { start, count: elements })),
    };
  }

  /** canonical ← one source tensor, reshaped to `shape` (default: the source's own shape). */
  direct(canonical: string, name: string, shape?: number[]): void {
    const p = this.part(name);
    this.out.set(canonical, { name: canonical, shape: shape ?? this.shapeOf(name), parts: [p], origin: this.real(name) });
  }

  /** canonical ← explicit parts (stacked experts, slices). */
  parts(canonical: string, shape: number[], parts: CanonicalPart[], origin: string): void {
    this.out.set(canonical, { name: canonical, shape, parts, origin });
  }

  /** Marks a source tensor as deliberately unused (e.g. an lm_head tied to the embedding). */
  skip(name: string): void {
    if (this.names.has(name)) this.used.add(this.real(name));
  }

  unused(): string[] {
    return this.source.names().filter((n) => !this.used.has(n));
  }

  /** The mapped tensors; unused source tensors are an error naming them (they mean a config mismatch). */
  finish(where: string): CanonicalTensors {
    const extra = this.unused();
    if (extra.length) {
      throw new HubmoeError(
        'BAD_CONFIG',
        `${where}: the checkpoint has tensors the config does not account for (${extra.slice(0, 6).join(', ')}${extra.length > 6 ? `, … ${extra.length} in all` : ''}); the config and the weights disagree`,
      );
    }
    return this.out;
  }
}

/** The tokenizer of BlackMamba and the state-spaces Mamba models (neither ships one). */
export const GPT_NEOX_TOKENIZER = 'EleutherAI/gpt-neox-20b';

export function ceilDiv(a: number, b: number): number {
  return Math.ceil(a / b);
}
