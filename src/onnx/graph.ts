/**
 * GraphBuilder: names values and nodes, holds small constants inline and registers large weights
 * whose bytes the exporter streams into external data later (see export.ts).
 */
import { HubmoeError } from '../errors.js';
import { f32ToF16 } from '../io/dtype.js';
import { TensorDataType } from './proto.js';
import type { Attribute, AttributeValue, Dim, GraphProto, NodeProto, TensorProto, ValueInfoProto } from './proto.js';

export type FloatDType = 'fp32' | 'fp16';

/** One contiguous piece of a weight, produced on demand as fp32 values. */
export interface WeightPart {
  /** Number of elements this part contributes. */
  elements: number;
  /** The source file the part's data comes from (used to order reads shard by shard). */
  file?: string;
  read(): Promise<Float32Array>;
}

export interface PendingWeight {
  name: string;
  dims: number[];
  dataType: TensorDataType.FLOAT | TensorDataType.FLOAT16;
  parts: WeightPart[];
}

export const MS_DOMAIN = 'com.microsoft';
/** hubmoe's custom operators (runtime/native/ops). */
export const HUBMOE_DOMAIN = 'ai.hubmoe';

function f32Bytes(values: Float32Array): Uint8Array {
  return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
}

export function encodeFloats(values: Float32Array, dataType: TensorDataType): Uint8Array {
  if (dataType === TensorDataType.FLOAT) return f32Bytes(values);
  const half = f32ToF16(values);
  return new Uint8Array(half.buffer, half.byteOffset, half.byteLength);
}

export class GraphBuilder {
  readonly nodes: NodeProto[] = [];
  readonly inputs: ValueInfoProto[] = [];
  readonly outputs: ValueInfoProto[] = [];
  readonly inline: TensorProto[] = [];
  readonly weights: PendingWeight[] = [];
  /** Element type of activations and weights: FLOAT or FLOAT16. */
  readonly floatType: TensorDataType.FLOAT | TensorDataType.FLOAT16;
  private readonly constCache = new Map<string, string>();
  private readonly weightNames = new Set<string>();
  private counter = 0;
  private scopes: string[] = [];

  constructor(readonly dtype: FloatDType) {
    this.floatType = dtype === 'fp16' ? TensorDataType.FLOAT16 : TensorDataType.FLOAT;
  }

  /** Runs `fn` with node and value names prefixed by `name` (e.g. `/blocks.3/mamba`). */
  scope<T>(name: string, fn: () => T): T {
    this.scopes.push(name);
    try {
      return fn();
    } finally {
      this.scopes.pop();
    }
  }

  private fresh(hint: string): string {
    const prefix = this.scopes.length ? `/${this.scopes.join('/')}/` : '/';
    return `${prefix}${hint}_${this.counter++}`;
  }

  input(name: string, elemType: TensorDataType, shape: Dim[]): string {
    this.inputs.push({ name, elemType, shape });
    return name;
  }

  /** Declares `value` as a graph output called `name` (`shape` undefined: rank not declared). */
  output(name: string, value: string, elemType: TensorDataType, shape: Dim[] | undefined): void {
    if (value !== name) this.nodes.push({ name: this.fresh('Identity'), opType: 'Identity', inputs: [value], outputs: [name], attributes: [] });
    this.outputs.push({ name, elemType, shape });
  }

  /** Adds a node; returns its output names (`outputs` is a count or explicit names). */
  node(
    opType: string,
    inputs: string[],
    opts: {
      attrs?: Record<string, AttributeValue | undefined> | Attribute[];
      outputs?: number | string[];
      domain?: string;
      /** Indexes of optional outputs left absent (named '' in the node, so the op does not compute them). */
      absent?: number[];
    } = {},
  ): string[] {
    const name = this.fresh(opType);
    const outs = Array.isArray(opts.outputs)
      ? opts.outputs
      : Array.from({ length: opts.outputs ?? 1 }, (_, i) => (opts.absent?.includes(i) ? '' : `${name}/out${i}`));
    let attributes: Attribute[] = [];
    if (Array.isArray(opts.attrs)) attributes = opts.attrs;
    else if (opts.attrs) {
      for (const [k, v] of Object.entries(opts.attrs)) if (v !== undefined) attributes.push({ name: k, value: v });
    }
    this.nodes.push({ name, opType, domain: opts.domain, inputs, outputs: outs, attributes });
    return outs;
  }

  /** Adds a single-output node and returns its output name. */
  op(opType: string, inputs: string[], attrs?: Record<string, AttributeValue | undefined> | Attribute[], domain?: string): string {
    return this.node(opType, inputs, { attrs, domain })[0]!;
  }

  private constant(key: string, make: (name: string) => TensorProto): string {
    const hit = this.constCache.get(key);
    if (hit) return hit;
    const name = `const_${this.constCache.size}`;
    this.inline.push(make(name));
    this.constCache.set(key, name);
    return name;
  }

  /** An int64 constant (shapes, axes, indices), kept inline in the .onnx. */
  ints(values: number[], dims: number[] = [values.length]): string {
    return this.constant(`i64:${dims.join('x')}:${values.join(',')}`, (name) => {
      const raw = new Uint8Array(values.length * 8);
      const dv = new DataView(raw.buffer);
      values.forEach((v, i) => dv.setBigInt64(i * 8, BigInt(v), true));
      return { name, dataType: TensorDataType.INT64, dims, raw };
    });
  }

  /** A scalar int64 constant. */
  int(value: number): string {
    return this.ints([value], []);
  }

  /** A small float constant in the graph's float type (or forced fp32), kept inline. */
  floats(values: number[], dims: number[] = [values.length], dataType: TensorDataType = this.floatType): string {
    return this.constant(`f${dataType}:${dims.join('x')}:${values.join(',')}`, (name) => ({
      name,
      dataType,
      dims,
      raw: encodeFloats(Float32Array.from(values), dataType),
    }));
  }

  scalar(value: number, dataType: TensorDataType = this.floatType): string {
    return this.floats([value], [], dataType);
  }

  /**
   * Registers a weight initializer whose bytes the exporter writes later from `parts`.
   * Registering the same name twice returns the existing initializer.
   */
  weight(name: string, dims: number[], parts: WeightPart[], dataType: TensorDataType.FLOAT | TensorDataType.FLOAT16 = this.floatType): string {
    if (this.weightNames.has(name)) return name;
    const expected = dims.reduce((a, b) => a * b, 1);
    const got = parts.reduce((a, p) => a + p.elements, 0);
    if (expected !== got) {
      throw new HubmoeError('BAD_SHAPE', `initializer ${name}: parts hold ${got} elements, shape [${dims.join(', ')}] needs ${expected}`);
    }
    this.weightNames.add(name);
    this.weights.push({ name, dims, dataType, parts });
    return name;
  }

  graph(name: string, initializers: TensorProto[]): GraphProto {
    return { name, nodes: this.nodes, initializers: [...this.inline, ...initializers], inputs: this.inputs, outputs: this.outputs };
  }
}
