/**
 * safetensors reader and writer.
 *
 * Format: u64 little-endian header length N, N bytes of JSON
 * `{name: {dtype, shape, data_offsets: [begin, end]}, __metadata__?: {str: str}}`, then the data block;
 * offsets are relative to the start of the data block. The reader validates the whole header before
 * any tensor is read, and reads tensors lazily with positioned reads (a shard may exceed what a Node
 * Buffer can hold).
 */
import { open, rename, rm, stat } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { dirname, basename, join } from 'node:path';
import { HubmoeError, fileError } from '../errors.js';
import { DTYPE_BYTES, isDType, numel } from './dtype.js';
import type { DType } from './dtype.js';

/** Upper bound on the JSON header, as in the reference implementation. */
export const MAX_HEADER_BYTES = 100_000_000;

export interface TensorEntry {
  dtype: DType;
  shape: number[];
  /** Absolute byte range in the file. */
  begin: number;
  end: number;
}

export interface SafetensorsHeader {
  tensors: Map<string, TensorEntry>;
  metadata: Record<string, string>;
  dataStart: number;
}

/** Random access to the bytes of named files: local disk, or (for Hub sources) ranged HTTP reads. */
export interface ByteSource {
  /** A human-readable location, used in error messages. */
  readonly label: string;
  size(): Promise<number>;
  read(position: number, length: number): Promise<Uint8Array>;
  close(): Promise<void>;
}

export class LocalFile implements ByteSource {
  private handle: FileHandle | undefined;
  private sizeCache: number | undefined;

  constructor(readonly path: string) {}

  get label(): string {
    return this.path;
  }

  private async fh(): Promise<FileHandle> {
    if (!this.handle) {
      try {
        this.handle = await open(this.path, 'r');
      } catch (err) {
        throw fileError(this.path, err, 'open');
      }
    }
    return this.handle;
  }

  async size(): Promise<number> {
    if (this.sizeCache === undefined) {
      const fh = await this.fh();
      this.sizeCache = (await fh.stat()).size;
    }
    return this.sizeCache;
  }

  async read(position: number, length: number): Promise<Uint8Array> {
    const fh = await this.fh();
    const buf = new Uint8Array(length);
    let done = 0;
    while (done < length) {
      const { bytesRead } = await fh.read(buf, done, length - done, position + done);
      if (bytesRead === 0) {
        throw new HubmoeError(
          'CORRUPT_FILE',
          `${this.path}: file ends at byte ${position + done}, expected ${position + length} (truncated download?)`,
        );
      }
      done += bytesRead;
    }
    return buf;
  }

  async close(): Promise<void> {
    await this.handle?.close();
    this.handle = undefined;
  }
}

function corrupt(label: string, what: string): HubmoeError {
  return new HubmoeError('CORRUPT_FILE', `${label}: invalid safetensors file: ${what}`);
}

const QUANTISED_DTYPES = /^(F8|F6|F4|FP4|E8M0|UE8)/;

/** Reads and validates the header of a safetensors file. */
export async function readSafetensorsHeader(src: ByteSource): Promise<SafetensorsHeader> {
  const label = src.label;
  const fileSize = await src.size();
  if (fileSize < 8) throw corrupt(label, `file is ${fileSize} bytes, too short for a header`);
  const lenBytes = await src.read(0, 8);
  const n = new DataView(lenBytes.buffer, lenBytes.byteOffset, 8).getBigUint64(0, true);
  if (n > BigInt(MAX_HEADER_BYTES)) throw corrupt(label, `header length ${n} exceeds ${MAX_HEADER_BYTES} bytes`);
  const headerLen = Number(n);
  if (8 + headerLen > fileSize) {
    throw corrupt(label, `header length ${headerLen} runs past the end of the ${fileSize}-byte file (truncated?)`);
  }
  const raw = await src.read(8, headerLen);
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(raw));
  } catch (err) {
    throw corrupt(label, `header is not valid UTF-8 JSON (${(err as Error).message})`);
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) throw corrupt(label, 'header is not a JSON object');
  const dataStart = 8 + headerLen;
  const dataLen = fileSize - dataStart;
  const tensors = new Map<string, TensorEntry>();
  let metadata: Record<string, string> = {};
  const ranges: Array<[number, number, string]> = [];
  for (const [name, value] of Object.entries(json as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (value === null || typeof value !== 'object' || Array.isArray(value)) throw corrupt(label, '__metadata__ is not an object');
      for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
        if (typeof v !== 'string') throw corrupt(label, `__metadata__.${k} is not a string`);
      }
      metadata = value as Record<string, string>;
      continue;
    }
    const e = value as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (e === null || typeof e !== 'object') throw corrupt(label, `entry ${name} is not an object`);
    if (typeof e.dtype !== 'string') throw corrupt(label, `tensor ${name} has no dtype`);
    if (!isDType(e.dtype)) {
      if (QUANTISED_DTYPES.test(e.dtype)) {
        throw new HubmoeError(
          'UNSUPPORTED',
          `${label}: tensor ${name} has dtype ${e.dtype}; quantised (FP8/FP4) checkpoints are not supported, use the bf16/fp16/fp32 release of the model`,
        );
      }
      throw corrupt(label, `tensor ${name} has unknown dtype ${e.dtype}`);
    }
    if (!Array.isArray(e.shape) || !e.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw corrupt(label, `tensor ${name} has an invalid shape ${JSON.stringify(e.shape)}`);
    }
    const off = e.data_offsets;
    if (!Array.isArray(off) || off.length !== 2 || !off.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw corrupt(label, `tensor ${name} has invalid data_offsets ${JSON.stringify(off)}`);
    }
    const [b, end] = off as [number, number];
    if (b > end) throw corrupt(label, `tensor ${name} has data_offsets [${b}, ${end}] with begin after end`);
    if (end > dataLen) {
      throw corrupt(label, `tensor ${name} ends at data byte ${end} but the data block has ${dataLen} bytes (truncated file?)`);
    }
    const shape = e.shape as number[];
    const expected = numel(shape) * DTYPE_BYTES[e.dtype];
    if (expected !== end - b) {
      throw corrupt(label, `tensor ${name}: ${e.dtype}${JSON.stringify(shape)} needs ${expected} bytes but data_offsets span ${end - b}`);
    }
    tensors.set(name, { dtype: e.dtype, shape, begin: dataStart + b, end: dataStart + end });
    ranges.push([b, end, name]);
  }
  ranges.sort((x, y) => x[0] - y[0] || x[1] - y[1]);
  for (let i = 1; i < ranges.length; i++) {
    const prev = ranges[i - 1]!;
    const cur = ranges[i]!;
    if (cur[0] < prev[1]) throw corrupt(label, `tensors ${prev[2]} and ${cur[2]} overlap`);
  }
  return { tensors, metadata, dataStart };
}

/** One open safetensors file. */
export class SafetensorsFile {
  private constructor(
    readonly source: ByteSource,
    readonly header: SafetensorsHeader,
  ) {}

  static async open(source: ByteSource | string): Promise<SafetensorsFile> {
    const src = typeof source === 'string' ? new LocalFile(source) : source;
    try {
      return new SafetensorsFile(src, await readSafetensorsHeader(src));
    } catch (err) {
      await src.close();
      throw err;
    }
  }

  get label(): string {
    return this.source.label;
  }

  names(): string[] {
    return [...this.header.tensors.keys()];
  }

  entry(name: string): TensorEntry {
    const e = this.header.tensors.get(name);
    if (!e) throw new HubmoeError('MISSING_TENSOR', `${this.label}: no tensor named ${name}`);
    return e;
  }

  /** Raw bytes of a tensor, or of rows [rowStart, rowEnd) along its first dimension. */
  async readBytes(name: string, rowStart?: number, rowEnd?: number): Promise<Uint8Array> {
    const e = this.entry(name);
    if (rowStart === undefined) return this.source.read(e.begin, e.end - e.begin);
    const rows = e.shape[0] ?? 1;
    const end = rowEnd ?? rows;
    if (rowStart < 0 || end > rows || rowStart > end) {
      throw new HubmoeError('BAD_ARGUMENT', `${this.label}: rows [${rowStart}, ${end}) out of range for ${name} with ${rows} rows`);
    }
    const rowBytes = rows === 0 ? 0 : (e.end - e.begin) / rows;
    return this.source.read(e.begin + rowStart * rowBytes, (end - rowStart) * rowBytes);
  }

  async close(): Promise<void> {
    await this.source.close();
  }
}

export interface WriteEntry {
  name: string;
  dtype: DType;
  shape: number[];
  /** The bytes, or a function producing them when the writer reaches this tensor. */
  data: Uint8Array | (() => Promise<Uint8Array>);
}

/**
 * Writes a safetensors file through a temporary name, renamed into place once complete, so a
 * failure never leaves a half-written file behind. Tensors are written one at a time.
 */
export async function writeSafetensors(path: string, entries: WriteEntry[], metadata?: Record<string, string>): Promise<number> {
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length) header.__metadata__ = metadata;
  let offset = 0;
  for (const e of entries) {
    const bytes = numel(e.shape) * DTYPE_BYTES[e.dtype];
    header[e.name] = { dtype: e.dtype, shape: e.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  const pad = (8 - (Buffer.byteLength(json) % 8)) % 8;
  json += ' '.repeat(pad);
  const headerBytes = Buffer.from(json, 'utf-8');
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.tmp`);
  const fh = await open(tmp, 'w');
  try {
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(headerBytes.length));
    await fh.write(len, 0, 8, 0);
    await fh.write(headerBytes, 0, headerBytes.length, 8);
    let pos = 8 + headerBytes.length;
    for (const e of entries) {
      const data = typeof e.data === 'function' ? await e.data() : e.data;
      const expected = numel(e.shape) * DTYPE_BYTES[e.dtype];
      if (data.byteLength !== expected) {
        throw new HubmoeError('BAD_SHAPE', `${path}: tensor ${e.name} has ${data.byteLength} bytes, ${e.dtype}${JSON.stringify(e.shape)} needs ${expected}`);
      }
      await fh.write(data, 0, data.byteLength, pos);
      pos += data.byteLength;
    }
    await fh.close();
    await rename(tmp, path);
    return pos;
  } catch (err) {
    await fh.close().catch(() => undefined);
    await rm(tmp, { force: true });
    throw err;
  }
}

/** Writes `entries` as shards of at most `maxShardBytes` plus `model.safetensors.index.json`. */
export async function writeShardedSafetensors(
  dir: string,
  entries: WriteEntry[],
  maxShardBytes: number,
  prefix = 'model',
): Promise<string[]> {
  const shards: WriteEntry[][] = [];
  let current: WriteEntry[] = [];
  let size = 0;
  for (const e of entries) {
    const bytes = numel(e.shape) * DTYPE_BYTES[e.dtype];
    if (current.length && size + bytes > maxShardBytes) {
      shards.push(current);
      current = [];
      size = 0;
    }
    current.push(e);
    size += bytes;
  }
  if (current.length) shards.push(current);
  const files: string[] = [];
  const weightMap: Record<string, string> = {};
  let total = 0;
  for (let i = 0; i < shards.length; i++) {
    const file = `${prefix}-${String(i + 1).padStart(5, '0')}-of-${String(shards.length).padStart(5, '0')}.safetensors`;
    await writeSafetensors(join(dir, file), shards[i]!, { format: 'pt' });
    for (const e of shards[i]!) {
      weightMap[e.name] = file;
      total += numel(e.shape) * DTYPE_BYTES[e.dtype];
    }
    files.push(file);
  }
  const { writeFile } = await import('node:fs/promises');
  await writeFile(join(dir, `${prefix}.safetensors.index.json`), JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 2));
  return files;
}

export async function fileExists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}
