/**
 * The safe torch.save reader (src/io/torch.ts, zip.ts, pickle.ts).
 *
 * Fixtures: fixtures/torch/*.bin come from fixtures/scripts/make_torch_files.py (standard library
 * only, emulating torch 2.11's byte layout); fixtures/torch/real/*.bin were written by a real
 * torch 2.11 with `make_torch_files.py --real`. Expected values are in the JSON files next to them.
 */
import { copyFile, mkdtemp, readFile, rm } from 'node:fs/promises';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HubmoeError } from '../../src/errors.js';
import type { HubmoeErrorCode } from '../../src/errors.js';
import { LocalDirStore, openCheckpoint } from '../../src/io/checkpoint.js';
import { isFloatDType, toFloat32, toIntArray } from '../../src/io/dtype.js';
import type { DType } from '../../src/io/dtype.js';
import { CODECS_ENCODE, PyCallable, PyDict, PyList, PySet, PyTuple, unpickle } from '../../src/io/pickle.js';
import type { PyValue, UnpickleOptions } from '../../src/io/pickle.js';
import { LocalFile } from '../../src/io/safetensors.js';
import type { ByteSource, TensorEntry } from '../../src/io/safetensors.js';
import { readTorchCheckpoint, torchGlobals } from '../../src/io/torch.js';
import { ZipArchive } from '../../src/io/zip.js';
import { errorOf } from '../helpers.js';

const DIR = fileURLToPath(new URL('../../fixtures/torch/', import.meta.url));
const REAL = join(DIR, 'real');
/** What every malicious payload in the fixtures would create if it ever ran. */
const MARKER = '/tmp/hubmoe-pickle-pwned';

interface ExpectedTensor {
  dtype: DType;
  shape: number[];
  values: number[];
}
type Expected = Record<string, Record<string, ExpectedTensor> & { refuses?: string }>;

const expected = JSON.parse(readFileSync(join(DIR, 'expected.json'), 'utf-8')) as Expected;
const realExpected = JSON.parse(readFileSync(join(REAL, 'real_expected.json'), 'utf-8')) as Record<string, Record<string, ExpectedTensor>>;

async function withFile<T>(path: string, fn: (src: LocalFile) => Promise<T>): Promise<T> {
  const src = new LocalFile(path);
  try {
    return await fn(src);
  } finally {
    await src.close();
  }
}

async function read(path: string): Promise<Map<string, TensorEntry>> {
  return withFile(path, (src) => readTorchCheckpoint(src));
}

async function values(src: ByteSource, e: TensorEntry): Promise<number[]> {
  const bytes = await src.read(e.begin, e.end - e.begin);
  return isFloatDType(e.dtype) ? Array.from(toFloat32(e.dtype, bytes)) : toIntArray(e.dtype, bytes);
}

async function expectError(p: Promise<unknown>, code: HubmoeErrorCode, ...fragments: string[]): Promise<HubmoeError> {
  const h = await errorOf(p);
  expect(h.code, h.message).toBe(code);
  for (const f of fragments) expect(h.message).toContain(f);
  return h;
}

class MemorySource implements ByteSource {
  reads: Array<[number, number]> = [];
  constructor(
    readonly label: string,
    private readonly data: Uint8Array,
  ) {}
  async size(): Promise<number> {
    return this.data.length;
  }
  async read(position: number, length: number): Promise<Uint8Array> {
    this.reads.push([position, length]);
    if (position + length > this.data.length) throw new HubmoeError('CORRUPT_FILE', `${this.label}: short read`);
    return this.data.slice(position, position + length);
  }
  async close(): Promise<void> {}
}

describe('torch.save checkpoints (emulated torch 2.11 layout)', () => {
  const good = ['state_dict.bin', 'protocol4.bin', 'prefix_other.bin', 'zip64.bin', 'zipfile_zip64.bin', 'nested_model.bin', 'parameters.bin', 'untyped_storage.bin'];

  for (const file of good) {
    it(`reads ${file}: names, dtypes, shapes and exact values`, async () => {
      const exp = expected[file]!;
      await withFile(join(DIR, file), async (src) => {
        const size = await src.size();
        const tensors = await readTorchCheckpoint(src);
        expect([...tensors.keys()]).toEqual(Object.keys(exp).sort((a, b) => orderIn(file, a) - orderIn(file, b)));
        for (const [name, e] of tensors) {
          const x = exp[name]!;
          expect(e.dtype, name).toBe(x.dtype);
          expect(e.shape, name).toEqual(x.shape);
          expect(e.end, name).toBeLessThanOrEqual(size);
          expect(await values(src, e), name).toEqual(x.values);
        }
      });
    });
  }

  // expected.json is written with sorted keys; the pickles keep the state dict's insertion order.
  const ORDER = [
    'layer.weight', 'layer.bias', 'emb.weight', 'norm.weight', 'step', 'idx', 'mask', 'view.full', 'view.tail', 'tied.a', 'tied.b', 'row', 'empty',
    'param', 'param_state', 'from_type', 'from_type_param', 'v1', 'bytes',
  ];
  function orderIn(_file: string, name: string): number {
    return ORDER.indexOf(name);
  }

  it('gives byte ranges in place: 64-byte aligned storages, views at their offset, shared storages', async () => {
    const t = await read(join(DIR, 'state_dict.bin'));
    for (const [name, e] of t) if (name !== 'view.tail') expect(e.begin % 64, name).toBe(0);
    const full = t.get('view.full')!;
    const tail = t.get('view.tail')!;
    expect(tail.begin).toBe(full.begin + 2 * 4);
    expect(tail.end).toBe(full.end);
    expect(t.get('tied.a')!.begin).toBe(t.get('tied.b')!.begin);
    expect(t.get('tied.a')!.end).toBe(t.get('tied.b')!.end);
    expect(t.get('step')!.shape).toEqual([]);
    expect(t.get('step')!.end - t.get('step')!.begin).toBe(8);
    expect(t.get('empty')!.end).toBe(t.get('empty')!.begin);
  });

  it('reads bf16 through toFloat32 exactly', async () => {
    await withFile(join(DIR, 'state_dict.bin'), async (src) => {
      const e = (await readTorchCheckpoint(src)).get('emb.weight')!;
      expect(e.dtype).toBe('BF16');
      expect(e.end - e.begin).toBe(8);
      expect(Array.from(toFloat32('BF16', await src.read(e.begin, 8)))).toEqual([1, -2.5, 0.15625, 3.140625]);
    });
  });

  it('finds the state dict under "model" next to args (argparse.Namespace), ints, floats, bytes and big ints', async () => {
    const t = await read(join(DIR, 'nested_model.bin'));
    expect(t.size).toBe(13);
    expect(t.has('iteration')).toBe(false);
    expect(t.has('args')).toBe(false);
  });

  it('works over any ByteSource, reading only headers, data.pkl and small records', async () => {
    const bytes = new Uint8Array(await readFile(join(DIR, 'zip64.bin')));
    const src = new MemorySource('mem://zip64.bin', bytes);
    const t = await readTorchCheckpoint(src);
    expect(t.size).toBe(13);
    expect(await values(src, t.get('layer.bias')!)).toEqual([1, 2, -3.5]);
    // Header reads only: the magic, the zip tail, the zip64 records, data.pkl, byteorder, local headers.
    expect(src.reads.length).toBeLessThan(30);
  });

  it('lists zip entries with their sizes and in-place data ranges', async () => {
    const zip = await ZipArchive.open(new MemorySource('z', new Uint8Array(await readFile(join(REAL, 'real_tied.bin')))));
    expect(zip.entries.map((e) => e.name)).toEqual([
      'real_tied/data.pkl', 'real_tied/.format_version', 'real_tied/.storage_alignment', 'real_tied/byteorder',
      'real_tied/data/0', 'real_tied/version', 'real_tied/.data/serialization_id',
    ]);
    const v = zip.entry('real_tied/version')!;
    expect(new TextDecoder().decode(await zip.read(v, 16))).toBe('3\n');
    const d = zip.entry('real_tied/data/0')!;
    expect(d.compressionMethod).toBe(0);
    expect(d.uncompressedSize).toBe(32);
    const r = await zip.storedRange(d);
    expect(r.begin % 64).toBe(0);
    expect(r.end - r.begin).toBe(32);
  });
});

describe('torch.save checkpoints written by real torch 2.11', () => {
  const ok = ['real_state_dict.bin', 'real_protocol4.bin', 'real_nested_model.bin', 'real_parameter.bin', 'real_tied.bin'];
  for (const file of ok) {
    it(`reads ${file}`, async () => {
      const exp = realExpected[file]!;
      await withFile(join(REAL, file), async (src) => {
        const tensors = await readTorchCheckpoint(src);
        expect([...tensors.keys()].sort()).toEqual(Object.keys(exp).sort());
        for (const [name, e] of tensors) {
          expect(e.dtype, name).toBe(exp[name]!.dtype);
          expect(e.shape, name).toEqual(exp[name]!.shape);
          expect(await values(src, e), name).toEqual(exp[name]!.values);
        }
      });
    });
  }

  it('shares one range between tied weights', async () => {
    const t = await read(join(REAL, 'real_tied.bin'));
    const a = t.get('embedding.word_embeddings.weight')!;
    expect(t.get('output_layer.weight')).toEqual(a);
    expect(a.begin % 64).toBe(0);
  });

  it('refuses the numpy globals of a Megatron rng_state', async () => {
    await expectError(read(join(REAL, 'real_numpy_rng.bin')), 'UNSAFE_PICKLE', 'numpy._core.multiarray._reconstruct', 'no code was run');
  });

  it('refuses non-contiguous tensors, legacy files and archives without tensors', async () => {
    await expectError(read(join(REAL, 'real_noncontiguous.bin')), 'UNSUPPORTED', 'tensor t', 'not contiguous');
    await expectError(read(join(REAL, 'real_legacy.bin')), 'UNSUPPORTED', 'legacy', 'safetensors');
    await expectError(read(join(REAL, 'real_untyped.bin')), 'UNSUPPORTED', 'no tensors');
  });
});

describe('malicious pickles are refused and nothing runs', () => {
  const mal = Object.keys(expected).filter((f) => f.startsWith('mal_')).sort();

  beforeAll(async () => {
    await rm(MARKER, { force: true });
  });

  it('has the malicious fixtures', () => {
    expect(mal.length).toBeGreaterThanOrEqual(15);
    for (const f of mal) expect(existsSync(join(DIR, f)), f).toBe(true);
  });

  for (const file of mal) {
    it(`refuses ${file}`, async () => {
      const global = expected[file]!.refuses!;
      const err = await expectError(read(join(DIR, file)), 'UNSAFE_PICKLE', global, 'refusing to load it (no code was run)');
      expect(err.message).toContain(file);
      expect(existsSync(MARKER)).toBe(false);
    });
  }

  it('names os.system the way the brief words it', async () => {
    await expectError(
      read(join(DIR, 'mal_os_system.bin')),
      'UNSAFE_PICKLE',
      'mal_os_system.bin: archive/data.pkl: refers to os.system, which a state dict never needs; refusing to load it (no code was run)',
    );
  });

  it('names subprocess.Popen even when protocol 2 writes it as commands.Popen', async () => {
    await expectError(read(join(DIR, 'mal_subprocess_in_state_dict.bin')), 'UNSAFE_PICKLE', 'commands.Popen (subprocess.Popen in Python 3)');
  });

  afterAll(() => {
    expect(existsSync(MARKER)).toBe(false);
  });
});

describe('damaged and unsupported files', () => {
  for (const file of ['truncated_data.bin', 'truncated_cd.bin', 'truncated_zip64_end.bin', 'truncated_before_eocd.bin', 'truncated_eocd.bin']) {
    it(`says ${file} looks truncated`, async () => {
      await expectError(read(join(DIR, file)), 'CORRUPT_FILE', file, 'looks truncated');
    });
  }

  it('reports a data.pkl that is not a pickle, with the opcode byte', async () => {
    await expectError(read(join(DIR, 'garbage_pkl.bin')), 'CORRUPT_FILE', 'garbage_pkl.bin', 'data.pkl', 'unknown opcode 0xff');
  });

  it('reports a data.pkl cut before STOP', async () => {
    await expectError(read(join(DIR, 'pkl_no_stop.bin')), 'CORRUPT_FILE', 'without a STOP opcode');
  });

  it('refuses compressed entries', async () => {
    await expectError(read(join(DIR, 'deflated.bin')), 'UNSUPPORTED', 'archive/data/0', 'compressed');
  });

  it('refuses big-endian checkpoints', async () => {
    await expectError(read(join(DIR, 'bigendian.bin')), 'UNSUPPORTED', 'big-endian');
  });

  it('refuses the legacy non-zip format with advice', async () => {
    await expectError(read(join(DIR, 'legacy.bin')), 'UNSUPPORTED', 'legacy.bin', 'legacy (pre-1.6, non-zip)', 're-save', 'safetensors');
  });

  it('names a non-contiguous tensor', async () => {
    await expectError(read(join(DIR, 'noncontiguous.bin')), 'UNSUPPORTED', 'tensor transposed', '[3,2]', '[1,3]');
  });

  it('refuses a tensor reaching past its storage', async () => {
    await expectError(read(join(DIR, 'storage_overrun.bin')), 'CORRUPT_FILE', 'tensor w', 'past the end of storage 0');
  });

  it('refuses nested dicts of tensors instead of guessing flat names', async () => {
    await expectError(read(join(DIR, 'nested_dicts.bin')), 'UNSUPPORTED', 'nests a dict of tensors under "layer"');
  });

  it('refuses a zip that is not a torch.save archive', async () => {
    await expectError(read(join(DIR, 'not_torch.bin')), 'CORRUPT_FILE', 'without data.pkl', 'readme.txt');
  });

  it('recognizes empty files and safetensors files with the wrong name', async () => {
    await expectError(readTorchCheckpoint(new MemorySource('empty.bin', new Uint8Array(0))), 'CORRUPT_FILE', 'empty.bin', 'empty');
    const header = new TextEncoder().encode('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}');
    const st = new Uint8Array(8 + header.length + 4);
    new DataView(st.buffer).setBigUint64(0, BigInt(header.length), true);
    st.set(header, 8);
    await expectError(readTorchCheckpoint(new MemorySource('model.bin', st)), 'CORRUPT_FILE', 'safetensors');
  });
});

describe('openCheckpoint over a directory with pytorch_model.bin', () => {
  let dir = '';
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'hubmoe-torch-'));
    await copyFile(join(DIR, 'nested_model.bin'), join(dir, 'pytorch_model.bin'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('lists and reads tensors as fp32, whole and in element ranges', async () => {
    const source = await openCheckpoint(new LocalDirStore(dir));
    try {
      expect(source.format).toBe('pytorch');
      expect(source.files).toEqual(['pytorch_model.bin']);
      expect(source.names()).toContain('emb.weight');
      expect(source.info('emb.weight')).toEqual({ name: 'emb.weight', dtype: 'BF16', shape: [2, 2], file: 'pytorch_model.bin' });
      expect(Array.from(await source.read('emb.weight'))).toEqual([1, -2.5, 0.15625, 3.140625]);
      expect(Array.from(await source.read('norm.weight'))).toEqual([1, 0.5, -2, 65504]);
      expect(Array.from(await source.read('layer.weight', { start: 3, count: 3 }))).toEqual([Math.fround(0.1), -0, 65504]);
      expect(Array.from(await source.read('view.tail', { start: 2, count: 2 }))).toEqual([4, 5]);
      expect(Array.from(await source.read('tied.b'))).toEqual([9, 8, 7, 6]);
      await expectError(source.read('idx'), 'BAD_SHAPE', 'I64');
    } finally {
      await source.close();
    }
  });
});

// ------------------------------------------------------------------------------------------------
// The pickle VM on its own.

type Canon = null | boolean | number | string | { [k: string]: Canon } | Canon[];

function canon(v: PyValue): Canon {
  if (v === null || typeof v === 'boolean' || typeof v === 'string' || typeof v === 'number') return v;
  if (typeof v === 'bigint') return { int: v.toString() };
  if (v instanceof Uint8Array) return { bytes: Buffer.from(v).toString('hex') };
  if (v instanceof PyList) return { list: v.items.map(canon) };
  if (v instanceof PyTuple) return { tuple: v.items.map(canon) };
  if (v instanceof PyDict) return { dict: [...v.map].map(([k, x]) => [canon(k), canon(x)]) };
  if (v instanceof PySet) return { set: v.items.map(canon).sort((a, b) => (JSON.stringify(a) < JSON.stringify(b) ? -1 : 1)) };
  return { object: v.pyType };
}

/** Enough globals for CPython's plain-data pickles: bytes at protocols 0 to 2 go through _codecs.encode, b'' through bytes(). */
const PLAIN_GLOBALS = new Map<string, PyValue>([
  ['_codecs.encode', CODECS_ENCODE],
  ['builtins.bytes', new PyCallable('builtins.bytes', (args) => (args.length === 0 ? new Uint8Array(0) : null))],
]);

function run(bytes: number[] | Uint8Array | string, opts: Partial<UnpickleOptions> = {}): PyValue {
  const data = typeof bytes === 'string' ? new Uint8Array(Buffer.from(bytes, 'latin1')) : Uint8Array.from(bytes);
  return unpickle(data, { label: 'test.pkl', globals: PLAIN_GLOBALS, ...opts });
}

function fails(bytes: number[] | string, code: HubmoeErrorCode, fragment: string, opts: Partial<UnpickleOptions> = {}): void {
  let err: unknown;
  try {
    run(bytes, opts);
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(HubmoeError);
  expect((err as HubmoeError).code, (err as Error).message).toBe(code);
  expect((err as HubmoeError).message).toContain(fragment);
}

describe('pickle VM', () => {
  const cases = JSON.parse(readFileSync(join(DIR, 'pickles.json'), 'utf-8')) as Array<{ protocol: number; hex: string; value: Canon }>;
  for (const c of cases) {
    it(`decodes CPython's protocol ${c.protocol} pickle of plain data`, () => {
      expect(canon(unpickle(new Uint8Array(Buffer.from(c.hex, 'hex')), { label: 'p', globals: PLAIN_GLOBALS }))).toEqual(c.value);
    });
  }

  it('keeps shared references shared (memo)', () => {
    const data = Buffer.from(cases.find((c) => c.protocol === 2)!.hex, 'hex');
    const v = unpickle(new Uint8Array(data), { label: 'p', globals: PLAIN_GLOBALS }) as PyDict;
    const shared = v.map.get('shared') as PyList;
    expect(shared.items[0]).toBe(shared.items[1]);
  });

  it('decodes Python 2 string opcodes (STRING, BINSTRING, SHORT_BINSTRING)', () => {
    expect(canon(run("S'a\\x41\\n\\'q\\101'\n."))).toBe("aA\n'qA");
    expect(canon(run('S"dq"\n.'))).toBe('dq');
    expect(run([0x54, 3, 0, 0, 0, 0x61, 0x62, 0x63, 0x2e])).toBe('abc');
    expect(run([0x55, 2, 0x68, 0x69, 0x2e])).toBe('hi');
  });

  it('decodes LONG4, BINUNICODE8, BINBYTES8, LONG_BINPUT/GET, POP, POP_MARK, DUP, PERSID', () => {
    expect(run([0x8b, 2, 0, 0, 0, 0xff, 0x7f, 0x2e])).toBe(0x7fff);
    expect(run([0x8a, 1, 0xff, 0x2e])).toBe(-1);
    expect(run([0x8a, 9, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0x2e])).toBe(1n << 64n);
    expect(run([0x8d, 2, 0, 0, 0, 0, 0, 0, 0, 0x6f, 0x6b, 0x2e])).toBe('ok');
    expect(run([0x8e, 1, 0, 0, 0, 0, 0, 0, 0, 7, 0x2e])).toEqual(new Uint8Array([7]));
    expect(run([0x4b, 5, 0x72, 9, 0, 0, 0, 0x30, 0x6a, 9, 0, 0, 0, 0x2e])).toBe(5);
    expect(run([0x4b, 1, 0x28, 0x4b, 2, 0x4b, 3, 0x31, 0x2e])).toBe(1);
    expect(canon(run([0x4b, 4, 0x32, 0x86, 0x2e]))).toEqual({ tuple: [4, 4] });
    expect(canon(run('I42\nL-7L\nF2.5\n\x87.'))).toEqual({ tuple: [42, -7, 2.5] });
    expect(run('Pabc\n.', { persistentLoad: (pid) => `pid:${String(pid)}` })).toBe('pid:abc');
    expect(canon(run('(I1\nI2\nl.'))).toEqual({ list: [1, 2] });
    expect(canon(run('(S\'k\'\nI1\nd.'))).toEqual({ dict: [['k', 1]] });
  });

  it('refuses globals off the allow-list, naming them, without resolving anything', () => {
    fails('cos\nsystem\n.', 'UNSAFE_PICKLE', 'refers to os.system');
    fails('c__builtin__\nexec\n.', 'UNSAFE_PICKLE', '__builtin__.exec (builtins.exec in Python 3)');
    fails([0x80, 4, 0x8c, 2, 0x6f, 0x73, 0x8c, 6, ...Buffer.from('system'), 0x93, 0x2e], 'UNSAFE_PICKLE', 'refers to os.system');
    fails("(S'x'\nios\nsystem\n.", 'UNSAFE_PICKLE', 'os.system, instantiated through INST');
    fails([0x82, 0x05, 0x2e], 'UNSAFE_PICKLE', 'EXT1 code 5');
    fails('Pabc\n.', 'UNSAFE_PICKLE', 'persistent id');
  });

  it('refuses calls, instances and state on things the allow-list did not make callable', () => {
    const globals = torchGlobals();
    fails('ctorch\nfloat32\n)R.', 'UNSAFE_PICKLE', 'a call of torch.dtype (REDUCE)', { globals });
    fails('ccollections\nOrderedDict\n)\x81.', 'UNSAFE_PICKLE', 'an instance of collections.OrderedDict (NEWOBJ)', { globals });
    fails('cargparse\nNamespace\n)}\x8c\x01aK\x01s\x92.', 'UNSAFE_PICKLE', 'keyword arguments', { globals });
    expect(run('cargparse\nNamespace\n)}\x92.', { globals })).toMatchObject({ pyType: 'argparse.Namespace' });
    fails(']K\x01b.', 'UNSAFE_PICKLE', 'setting the state of a list (BUILD)');
    fails(')K\x01K\x02s.', 'UNSAFE_PICKLE', 'item assignment on a tuple');
    fails(')K\x01a.', 'UNSAFE_PICKLE', 'append on a tuple');
  });

  it('builds argparse.Namespace as an inert object', () => {
    const v = run('cargparse\nNamespace\n)\x81}(X\x01\x00\x00\x00aK\x01ub.', { globals: torchGlobals() });
    expect(v).toMatchObject({ pyType: 'argparse.Namespace' });
    expect((v as unknown as { attrs: Map<string, PyValue> }).attrs.get('a')).toBe(1);
  });

  it('rejects malformed input as CORRUPT_FILE', () => {
    fails([0xfe], 'CORRUPT_FILE', 'unknown opcode 0xfe at byte 0');
    fails([0x80, 2, 0x30, 0x2e], 'CORRUPT_FILE', 'no MARK');
    fails([0x2e], 'CORRUPT_FILE', 'stack underflow');
    fails([0x68, 3, 0x2e], 'CORRUPT_FILE', 'memo has no entry 3');
    fails([0x58, 5, 0, 0, 0, 0x61], 'CORRUPT_FILE', 'truncated');
    fails([0x4b, 1], 'CORRUPT_FILE', 'without a STOP opcode');
    fails('Iabc\n.', 'CORRUPT_FILE', 'not an integer');
    fails([0x80, 6, 0x2e], 'UNSUPPORTED', 'protocol 6');
    fails([0x97, 0x2e], 'UNSUPPORTED', 'out-of-band');
  });

  it('checks lengths against the input before allocating', () => {
    // BINUNICODE8 / BINBYTES8 / BYTEARRAY8 claiming 2^62 bytes.
    for (const op of [0x8d, 0x8e, 0x96]) fails([op, 0, 0, 0, 0, 0, 0, 0, 0x40, 0x2e], 'CORRUPT_FILE', 'truncated');
    fails([0x42, 0xff, 0xff, 0xff, 0xff, 0x2e], 'CORRUPT_FILE', 'truncated');
    fails([0x95, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0x2e], 'CORRUPT_FILE', 'truncated');
  });

  it('enforces its resource limits', () => {
    fails(']]]].', 'UNSAFE_PICKLE', 'objects (3)', { limits: { maxObjects: 3 } });
    fails('((((.', 'UNSAFE_PICKLE', 'MARK nesting (3)', { limits: { maxDepth: 3 } });
    fails('K\x012222.', 'UNSAFE_PICKLE', 'stack size (3)', { limits: { maxStack: 3 } });
    fails('K\x01q\x01q\x02q\x03.', 'UNSAFE_PICKLE', 'memo entries (2)', { limits: { maxMemo: 2 } });
    fails(`I${'9'.repeat(100)}\n.`, 'UNSAFE_PICKLE', 'integer size', { limits: { maxIntBytes: 50 } });
    fails([0x8b, 0, 0, 0, 0x10, 0x2e], 'UNSAFE_PICKLE', 'integer size');
    fails(`c${'a'.repeat(100)}\nb\n.`, 'UNSAFE_PICKLE', 'text lines', { limits: { maxLine: 64 } });
  });

  it('stays linear on a billion-laughs pickle (shared references, no copies)', () => {
    // l0 = [1, 1]; l(n+1) = [ln, ln] thirty times: 2^30 leaves if expanded, ~200 bytes as a pickle.
    let p = '(K\x01K\x01l';
    for (let i = 0; i < 30; i++) p += '2\x86';
    const v = run(`${p}.`) as PyTuple;
    expect(v).toBeInstanceOf(PyTuple);
    expect((v.items[0] as PyTuple).items[0]).toBe((v.items[0] as PyTuple).items[1]);
  });
});

describe('fixture files', () => {
  it('are all small', () => {
    for (const d of [DIR, REAL]) {
      for (const f of readdirSync(d)) {
        if (f.endsWith('.bin')) expect(readFileSync(join(d, f)).length, f).toBeLessThan(8192);
      }
    }
  });
});
