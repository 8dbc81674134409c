/**
 * TensorSource: a lazy view of a checkpoint's tensors (name → dtype, shape, bytes on demand), over
 * whatever files hold them: one safetensors file, shards listed by `model.safetensors.index.json`,
 * or a PyTorch `torch.save` zip. Files are reached through a FileStore, so a local directory and a
 * Hub repository read the same way.
 */
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { HubmoeError, fileError } from '../errors.js';
import { DTYPE_BYTES, isFloatDType, numel, toFloat32 } from './dtype.js';
import type { DType } from './dtype.js';
import { LocalFile, SafetensorsFile } from './safetensors.js';
import type { ByteSource, TensorEntry } from './safetensors.js';
import { readTorchCheckpoint } from './torch.js';

/** The files of a model repository or directory. */
export interface FileStore {
  /** Where the files come from (a directory, or `repo@commit`), for messages. */
  readonly label: string;
  /** Relative paths of every file in the store. */
  list(): Promise<string[]>;
  readText(path: string): Promise<string>;
  open(path: string): Promise<ByteSource>;
  /**
   * Called before the tensors of `path` are read in bulk, so a remote store can fetch the whole
   * file first; a local store does nothing.
   */
  prepare?(path: string): Promise<void>;
}

export class LocalDirStore implements FileStore {
  constructor(readonly dir: string) {}

  get label(): string {
    return this.dir;
  }

  async list(): Promise<string[]> {
    const out: string[] = [];
    const walk = async (rel: string): Promise<void> => {
      let entries;
      try {
        entries = await readdir(join(this.dir, rel), { withFileTypes: true });
      } catch (err) {
        throw fileError(join(this.dir, rel), err, 'list');
      }
      for (const e of entries) {
        const p = rel ? `${rel}/${e.name}` : e.name;
        if (e.isDirectory()) {
          if (!e.name.startsWith('.')) await walk(p);
        } else out.push(p);
      }
    };
    await walk('');
    return out.sort();
  }

  async readText(path: string): Promise<string> {
    try {
      return await readFile(join(this.dir, path), 'utf-8');
    } catch (err) {
      throw fileError(join(this.dir, path), err);
    }
  }

  async open(path: string): Promise<ByteSource> {
    return new LocalFile(join(this.dir, path));
  }
}

export interface TensorInfo {
  name: string;
  dtype: DType;
  shape: number[];
  /** The file that holds it, relative to the store. */
  file: string;
}

export type WeightFormat = 'safetensors' | 'pytorch';

export interface ElementRange {
  start: number;
  count: number;
}

export interface TensorSource {
  readonly label: string;
  readonly format: WeightFormat;
  /** Weight files in the order they should be read. */
  readonly files: string[];
  names(): string[];
  has(name: string): boolean;
  info(name: string): TensorInfo;
  /** A float tensor as fp32, whole or `count` elements from element `start` (row-major). */
  read(name: string, range?: ElementRange): Promise<Float32Array>;
  /** Fetches a weight file before its tensors are read (remote sources download it). */
  prepare(file: string): Promise<void>;
  close(): Promise<void>;
}

interface Located {
  entry: TensorEntry;
  file: string;
}

class EntrySource implements TensorSource {
  constructor(
    readonly label: string,
    readonly format: WeightFormat,
    readonly files: string[],
    private readonly store: FileStore,
    private readonly sources: Map<string, ByteSource>,
    private readonly tensors: Map<string, Located>,
  ) {}

  names(): string[] {
    return [...this.tensors.keys()];
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  info(name: string): TensorInfo {
    const t = this.located(name);
    return { name, dtype: t.entry.dtype, shape: t.entry.shape, file: t.file };
  }

  private located(name: string): Located {
    const t = this.tensors.get(name);
    if (!t) throw new HubmoeError('MISSING_TENSOR', `${this.label}: the checkpoint has no tensor named ${name}`);
    return t;
  }

  async read(name: string, range?: ElementRange): Promise<Float32Array> {
    const { entry, file } = this.located(name);
    if (!isFloatDType(entry.dtype)) {
      throw new HubmoeError('BAD_SHAPE', `${this.label}: tensor ${name} is ${entry.dtype}, expected a floating-point tensor`);
    }
    const size = DTYPE_BYTES[entry.dtype];
    let begin = entry.begin;
    let length = entry.end - entry.begin;
    if (range) {
      const total = numel(entry.shape);
      if (range.start < 0 || range.count < 0 || range.start + range.count > total) {
        throw new HubmoeError('BAD_ARGUMENT', `${this.label}: elements [${range.start}, ${range.start + range.count}) out of range for ${name} with ${total} elements`);
      }
      begin += range.start * size;
      length = range.count * size;
    }
    const src = this.sources.get(file)!;
    return toFloat32(entry.dtype, await src.read(begin, length));
  }

  async prepare(file: string): Promise<void> {
    await this.store.prepare?.(file);
  }

  async close(): Promise<void> {
    await Promise.all([...this.sources.values()].map((s) => s.close()));
  }
}

const SAFETENSORS_INDEX = 'model.safetensors.index.json';
const TORCH_INDEX = 'pytorch_model.bin.index.json';

/** Which weight files a store's checkpoint consists of, in the preferred format. */
export function selectWeightFiles(files: string[]): { format: WeightFormat; index?: string; files: string[] } | undefined {
  const top = files.filter((f) => !f.includes('/'));
  if (top.includes(SAFETENSORS_INDEX)) return { format: 'safetensors', index: SAFETENSORS_INDEX, files: [] };
  if (top.includes('model.safetensors')) return { format: 'safetensors', files: ['model.safetensors'] };
  const st = top.filter((f) => f.endsWith('.safetensors'));
  if (st.length) return { format: 'safetensors', files: st };
  if (top.includes(TORCH_INDEX)) return { format: 'pytorch', index: TORCH_INDEX, files: [] };
  if (top.includes('pytorch_model.bin')) return { format: 'pytorch', files: ['pytorch_model.bin'] };
  const pt = top.filter((f) => f.endsWith('.bin') || f.endsWith('.pt') || f.endsWith('.pth'));
  if (pt.length) return { format: 'pytorch', files: pt };
  return undefined;
}

async function readIndex(store: FileStore, index: string): Promise<Map<string, string>> {
  let json: unknown;
  try {
    json = JSON.parse(await store.readText(index));
  } catch (err) {
    if (err instanceof HubmoeError) throw err;
    throw new HubmoeError('CORRUPT_FILE', `${store.label}/${index}: not valid JSON (${(err as Error).message})`);
  }
  const map = (json as { weight_map?: unknown })?.weight_map;
  if (!map || typeof map !== 'object' || Array.isArray(map)) {
    throw new HubmoeError('CORRUPT_FILE', `${store.label}/${index}: has no weight_map object`);
  }
  const out = new Map<string, string>();
  for (const [name, file] of Object.entries(map as Record<string, unknown>)) {
    if (typeof file !== 'string' || file.includes('..') || file.startsWith('/')) {
      throw new HubmoeError('CORRUPT_FILE', `${store.label}/${index}: weight_map entry for ${name} is not a file name`);
    }
    out.set(name, file);
  }
  return out;
}

/** Tokenizer files a model repo may carry, copied into model dirs. */
export const TOKENIZER_FILES = [
  'tokenizer.json',
  'tokenizer_config.json',
  'special_tokens_map.json',
  'added_tokens.json',
  'tokenizer.model',
  'vocab.json',
  'merges.txt',
  'chat_template.jinja',
  'chat_template.json',
];

export interface WeightFiles {
  format: WeightFormat;
  /** The index file, for sharded checkpoints. */
  index?: string;
  /** The weight files (shards in index order), each checked to exist. */
  files: string[];
  /** Tensor name → shard, for sharded checkpoints. */
  weightMap?: Map<string, string>;
}

/** The weight files of a store's checkpoint, in the preferred format (reads only the index). */
export async function findWeightFiles(store: FileStore): Promise<WeightFiles> {
  const all = await store.list();
  const sel = selectWeightFiles(all);
  if (!sel) {
    throw new HubmoeError(
      'NOT_FOUND',
      `${store.label}: no weights found (expected model.safetensors, a model.safetensors.index.json with shards, or pytorch_model.bin)`,
    );
  }
  if (!sel.index) return { format: sel.format, files: sel.files };
  const weightMap = await readIndex(store, sel.index);
  const files = [...new Set(weightMap.values())].sort();
  const present = new Set(all);
  for (const f of files) {
    if (!present.has(f) && !(await probe(store, f))) {
      throw new HubmoeError('NOT_FOUND', `${store.label}: shard ${f} listed in ${sel.index} is missing`);
    }
  }
  return { format: sel.format, index: sel.index, files, weightMap };
}

/** Opens the checkpoint in a store, validating every header before any tensor is read. */
export async function openCheckpoint(store: FileStore): Promise<TensorSource> {
  const sel = await findWeightFiles(store);
  const { weightMap, files } = sel;
  const sources = new Map<string, ByteSource>();
  const tensors = new Map<string, Located>();
  try {
    for (const file of files) {
      const src = await store.open(file);
      sources.set(file, src);
      const entries =
        sel.format === 'safetensors' ? (await SafetensorsFile.open(src)).header.tensors : await readTorchCheckpoint(src);
      for (const [name, entry] of entries) {
        // A tensor the index places elsewhere (or not at all) is ignored, as transformers does.
        if (weightMap && weightMap.get(name) !== file) continue;
        if (tensors.has(name)) {
          throw new HubmoeError('CORRUPT_FILE', `${store.label}: tensor ${name} appears in both ${tensors.get(name)!.file} and ${file}`);
        }
        tensors.set(name, { entry, file });
      }
    }
    if (weightMap) {
      for (const [name, file] of weightMap) {
        if (!tensors.has(name)) {
          throw new HubmoeError('MISSING_TENSOR', `${store.label}: ${sel.index} places ${name} in ${file}, but that shard does not contain it`);
        }
      }
    }
  } catch (err) {
    await Promise.all([...sources.values()].map((s) => s.close()));
    throw err;
  }
  return new EntrySource(store.label, sel.format, files, store, sources, tensors);
}

async function probe(store: FileStore, file: string): Promise<boolean> {
  try {
    const s = await store.open(file);
    await s.size();
    await s.close();
    return true;
  } catch (err) {
    // Offline, auth or network problems say more than "missing".
    if (err instanceof HubmoeError && err.code.startsWith('HUB_')) throw err;
    return false;
  }
}
