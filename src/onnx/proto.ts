/**
 * A minimal protobuf encoder for the ONNX messages hubmoe writes (ModelProto and what it contains).
 * Field numbers follow onnx/onnx.proto (IR version 8+). Large initializers never pass through here:
 * they live in external data files and the .onnx keeps only their locations.
 */

export enum TensorDataType {
  FLOAT = 1,
  UINT8 = 2,
  INT8 = 3,
  INT32 = 6,
  INT64 = 7,
  BOOL = 9,
  FLOAT16 = 10,
  DOUBLE = 11,
  BFLOAT16 = 16,
}

export enum AttributeType {
  FLOAT = 1,
  INT = 2,
  STRING = 3,
  TENSOR = 4,
  FLOATS = 6,
  INTS = 7,
  STRINGS = 8,
}

/** Growable byte buffer with protobuf primitives. */
class Writer {
  private buf = new Uint8Array(256);
  private len = 0;

  private ensure(n: number): void {
    if (this.len + n <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < this.len + n) cap *= 2;
    const next = new Uint8Array(cap);
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
  }

  varint(v: number | bigint): void {
    let x = BigInt.asUintN(64, BigInt(v));
    this.ensure(10);
    while (x >= 0x80n) {
      this.buf[this.len++] = Number(x & 0x7fn) | 0x80;
      x >>= 7n;
    }
    this.buf[this.len++] = Number(x);
  }

  tag(field: number, wire: number): void {
    this.varint((field << 3) | wire);
  }

  bytes(field: number, data: Uint8Array): void {
    this.tag(field, 2);
    this.varint(data.length);
    this.ensure(data.length);
    this.buf.set(data, this.len);
    this.len += data.length;
  }

  string(field: number, s: string): void {
    this.bytes(field, new TextEncoder().encode(s));
  }

  int(field: number, v: number | bigint): void {
    this.tag(field, 0);
    this.varint(v);
  }

  float(field: number, v: number): void {
    this.tag(field, 5);
    this.ensure(4);
    new DataView(this.buf.buffer).setFloat32(this.len, v, true);
    this.len += 4;
  }

  message(field: number, encode: (w: Writer) => void): void {
    const inner = new Writer();
    encode(inner);
    this.bytes(field, inner.finish());
  }

  packedInts(field: number, values: ReadonlyArray<number | bigint>): void {
    const inner = new Writer();
    for (const v of values) inner.varint(v);
    this.bytes(field, inner.finish());
  }

  packedFloats(field: number, values: readonly number[]): void {
    const data = new Uint8Array(values.length * 4);
    const dv = new DataView(data.buffer);
    values.forEach((v, i) => dv.setFloat32(i * 4, v, true));
    this.bytes(field, data);
  }

  finish(): Uint8Array {
    return this.buf.slice(0, this.len);
  }
}

export type AttributeValue = number | string | number[] | string[] | TensorProto | { float: number } | { floats: number[] };

export interface Attribute {
  name: string;
  value: AttributeValue;
  /** Forces the attribute type when it cannot be inferred (e.g. a float that is an integer value). */
  type?: AttributeType;
}

export interface NodeProto {
  name: string;
  opType: string;
  domain?: string;
  inputs: string[];
  outputs: string[];
  attributes: Attribute[];
}

export interface ExternalLocation {
  location: string;
  offset: number;
  length: number;
}

export interface TensorProto {
  name: string;
  dataType: TensorDataType;
  dims: number[];
  /** Inline little-endian bytes (small tensors), or an external-data location (large ones). */
  raw?: Uint8Array;
  external?: ExternalLocation;
}

export type Dim = number | string;

export interface ValueInfoProto {
  name: string;
  elemType: TensorDataType;
  /** Absent: the rank is not declared. */
  shape?: Dim[];
}

export interface GraphProto {
  name: string;
  nodes: NodeProto[];
  initializers: TensorProto[];
  inputs: ValueInfoProto[];
  outputs: ValueInfoProto[];
}

export interface ModelProto {
  irVersion: number;
  opsets: Array<{ domain: string; version: number }>;
  producerName: string;
  producerVersion: string;
  graph: GraphProto;
  metadata: Record<string, string>;
}

function encodeTensor(w: Writer, t: TensorProto): void {
  w.packedInts(1, t.dims);
  w.int(2, t.dataType);
  w.string(8, t.name);
  if (t.external) {
    const entry = (key: string, value: string): void =>
      w.message(13, (e) => {
        e.string(1, key);
        e.string(2, value);
      });
    entry('location', t.external.location);
    entry('offset', String(t.external.offset));
    entry('length', String(t.external.length));
    w.int(14, 1);
  } else {
    w.bytes(9, t.raw ?? new Uint8Array(0));
  }
}

function encodeAttribute(w: Writer, a: Attribute): void {
  w.string(1, a.name);
  const v = a.value;
  if (typeof v === 'string') {
    w.bytes(4, new TextEncoder().encode(v));
    w.int(20, AttributeType.STRING);
  } else if (typeof v === 'number') {
    if (a.type === AttributeType.FLOAT || !Number.isInteger(v)) {
      w.float(2, v);
      w.int(20, AttributeType.FLOAT);
    } else {
      w.int(3, v);
      w.int(20, AttributeType.INT);
    }
  } else if (Array.isArray(v)) {
    if (v.length && typeof v[0] === 'string') {
      for (const s of v as string[]) w.bytes(9, new TextEncoder().encode(s));
      w.int(20, AttributeType.STRINGS);
    } else if (a.type === AttributeType.FLOATS) {
      w.packedFloats(7, v as number[]);
      w.int(20, AttributeType.FLOATS);
    } else {
      w.packedInts(8, v as number[]);
      w.int(20, AttributeType.INTS);
    }
  } else if ('float' in v) {
    w.float(2, v.float);
    w.int(20, AttributeType.FLOAT);
  } else if ('floats' in v) {
    w.packedFloats(7, v.floats);
    w.int(20, AttributeType.FLOATS);
  } else {
    w.message(5, (t) => encodeTensor(t, v));
    w.int(20, AttributeType.TENSOR);
  }
}

function encodeValueInfo(w: Writer, v: ValueInfoProto): void {
  w.string(1, v.name);
  w.message(2, (type) =>
    type.message(1, (tensor) => {
      tensor.int(1, v.elemType);
      if (v.shape) {
        const dims = v.shape;
        tensor.message(2, (shape) => {
          for (const d of dims) {
            shape.message(1, (dim) => (typeof d === 'number' ? dim.int(1, d) : dim.string(2, d)));
          }
        });
      }
    }),
  );
}

function encodeNode(w: Writer, n: NodeProto): void {
  for (const i of n.inputs) w.string(1, i);
  for (const o of n.outputs) w.string(2, o);
  w.string(3, n.name);
  w.string(4, n.opType);
  for (const a of n.attributes) w.message(5, (m) => encodeAttribute(m, a));
  if (n.domain) w.string(7, n.domain);
}

export function encodeModel(m: ModelProto): Uint8Array {
  const w = new Writer();
  w.int(1, m.irVersion);
  w.string(2, m.producerName);
  w.string(3, m.producerVersion);
  w.message(7, (g) => {
    for (const n of m.graph.nodes) g.message(1, (x) => encodeNode(x, n));
    g.string(2, m.graph.name);
    for (const t of m.graph.initializers) g.message(5, (x) => encodeTensor(x, t));
    for (const i of m.graph.inputs) g.message(11, (x) => encodeValueInfo(x, i));
    for (const o of m.graph.outputs) g.message(12, (x) => encodeValueInfo(x, o));
  });
  for (const o of m.opsets) {
    w.message(8, (x) => {
      if (o.domain) x.string(1, o.domain);
      x.int(2, o.version);
    });
  }
  for (const [k, v] of Object.entries(m.metadata)) {
    w.message(14, (x) => {
      x.string(1, k);
      x.string(2, v);
    });
  }
  return w.finish();
}
