/**
 * Writes a built graph as `<name>.onnx` plus `<name>.onnx_data`: every weight goes to external data
 * at an offset aligned to 4096 bytes (so ONNX Runtime can map it, and models over 2 GB work), and
 * weights are streamed part by part in the order of the source files they come from, so a
 * conversion holds at most one part (one source tensor, one expert) in memory at a time.
 */
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFile } from 'node:fs/promises';
import { HubmoeError } from '../errors.js';
import { encodeFloats } from './graph.js';
import type { GraphBuilder, PendingWeight } from './graph.js';
import { TensorDataType, encodeModel } from './proto.js';
import type { TensorProto } from './proto.js';

export const EXTERNAL_ALIGNMENT = 4096;
export const IR_VERSION = 10;
export const OPSETS = [
  { domain: '', version: 21 },
  { domain: 'com.microsoft', version: 1 },
  { domain: 'ai.hubmoe', version: 1 },
];

export interface WriteProgress {
  (done: number, total: number, tensor: string): void;
}

export interface WriteOptions {
  /** Order of source files; weights are written file by file in this order. */
  fileOrder?: string[];
  /** Called before the first read from a source file (remote sources download it here). */
  prepare?: (file: string) => Promise<void>;
  onProgress?: WriteProgress;
  metadata?: Record<string, string>;
  producerVersion: string;
}

export interface WrittenModel {
  onnxPath: string;
  dataPath: string;
  dataBytes: number;
  initializers: number;
}

function bytesPer(dataType: TensorDataType): number {
  return dataType === TensorDataType.FLOAT16 ? 2 : 4;
}

function align(n: number): number {
  return Math.ceil(n / EXTERNAL_ALIGNMENT) * EXTERNAL_ALIGNMENT;
}

/** Where each weight of `g` goes in the external data file `dataName`, and the file's size. */
function layoutWeights(g: GraphBuilder, dataName: string): { layout: Map<PendingWeight, number>; initializers: TensorProto[]; total: number } {
  const layout = new Map<PendingWeight, number>();
  let offset = 0;
  const initializers: TensorProto[] = [];
  for (const w of g.weights) {
    const length = w.dims.reduce((a, b) => a * b, 1) * bytesPer(w.dataType);
    offset = align(offset);
    layout.set(w, offset);
    initializers.push({ name: w.name, dataType: w.dataType, dims: w.dims, external: { location: dataName, offset, length } });
    offset += length;
  }
  return { layout, initializers, total: offset };
}

function encode(g: GraphBuilder, initializers: TensorProto[], opts: Pick<WriteOptions, 'producerVersion' | 'metadata'>): Uint8Array {
  return encodeModel({
    irVersion: IR_VERSION,
    opsets: OPSETS,
    producerName: 'hubmoe',
    producerVersion: opts.producerVersion,
    graph: g.graph('hubmoe', initializers),
    metadata: opts.metadata ?? {},
  });
}

/**
 * Writes `<name>.onnx` for a graph whose weights are those of `owner` (same names, shapes, types and
 * order), pointing at the external data `owner` was written to (`<ownerName>.onnx_data`, same dir):
 * a second graph over one copy of the weights.
 */
export async function writeOnnxSharing(
  g: GraphBuilder,
  owner: GraphBuilder,
  dir: string,
  name: string,
  ownerName: string,
  opts: Pick<WriteOptions, 'producerVersion' | 'metadata'>,
): Promise<string> {
  const same =
    g.weights.length === owner.weights.length &&
    g.weights.every((w, i) => {
      const o = owner.weights[i]!;
      return w.name === o.name && w.dataType === o.dataType && w.dims.length === o.dims.length && w.dims.every((d, k) => d === o.dims[k]);
    });
  if (!same) throw new HubmoeError('RUNTIME', `internal error: ${name}.onnx: its weights differ from ${ownerName}.onnx's, so it cannot share ${ownerName}.onnx_data`);
  const { initializers } = layoutWeights(g, `${ownerName}.onnx_data`);
  const onnxPath = join(dir, `${name}.onnx`);
  await writeFile(onnxPath, encode(g, initializers, opts));
  return onnxPath;
}

export async function writeOnnx(g: GraphBuilder, dir: string, name: string, opts: WriteOptions): Promise<WrittenModel> {
  const dataName = `${name}.onnx_data`;
  const { layout, initializers, total } = layoutWeights(g, dataName);
  const onnxPath = join(dir, `${name}.onnx`);
  await writeFile(onnxPath, encode(g, initializers, opts));

  const order = new Map((opts.fileOrder ?? []).map((f, i) => [f, i]));
  const rank = (w: PendingWeight): number => {
    let best = Number.MAX_SAFE_INTEGER;
    for (const p of w.parts) if (p.file !== undefined) best = Math.min(best, order.get(p.file) ?? best);
    return best;
  };
  const jobs = [...g.weights].sort((a, b) => rank(a) - rank(b));
  const prepared = new Set<string>();
  const dataPath = join(dir, dataName);
  const fh = await open(dataPath, 'w');
  try {
    let done = 0;
    for (const w of jobs) {
      let pos = layout.get(w)!;
      for (const part of w.parts) {
        if (part.file !== undefined && !prepared.has(part.file)) {
          prepared.add(part.file);
          await opts.prepare?.(part.file);
        }
        const bytes = encodeFloats(await part.read(), w.dataType);
        await fh.write(bytes, 0, bytes.byteLength, pos);
        pos += bytes.byteLength;
        done += bytes.byteLength;
        opts.onProgress?.(done, total, w.name);
      }
    }
    if (total > 0) await fh.truncate(total);
  } finally {
    await fh.close();
  }
  return { onnxPath, dataPath, dataBytes: total, initializers: initializers.length };
}
