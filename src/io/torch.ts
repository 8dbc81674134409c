/**
 * Safe reader for `torch.save` checkpoints (pytorch_model.bin, *.pt, *.pth): the zip format of
 * torch ≥ 1.6. Nothing in the file is ever executed: data.pkl goes through hubmoe's own pickle VM
 * (pickle.ts) with the allow-list below, and tensors come back as byte ranges of the zip, read in
 * place later (torch stores entries uncompressed).
 *
 * Layout (see also zip.ts for the container): `<prefix>/data.pkl` (pickle, protocol 2 by default),
 * `<prefix>/data/<key>` (raw little-endian storage bytes, aligned to 64), `<prefix>/byteorder`,
 * `<prefix>/version`, `<prefix>/.format_version`, `<prefix>/.storage_alignment`,
 * `<prefix>/.data/serialization_id`, where `<prefix>` is the saved file's name without extension
 * ("archive" for streams) and is taken from wherever data.pkl is.
 *
 * In the pickle a tensor is `torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride,
 * requires_grad, backward_hooks[, metadata])`, a Parameter `torch._utils._rebuild_parameter(tensor,
 * requires_grad, OrderedDict())`, a tensor with Python attributes
 * `torch._tensor._rebuild_from_type_v2(func, type, args, state)`, and a storage the persistent id
 * `('storage', torch.<Type>Storage, '<key>', '<location>', numel)` (torch 2.11 still writes the
 * typed storage classes; a raw UntypedStorage appears as torch.storage.UntypedStorage).
 *
 * Which dict is the state dict: the top-level dict when all its values are tensors; otherwise the
 * first of "model", "state_dict", "module" that is a dict holding tensors (Megatron and BlackMamba
 * save `{"model": state_dict, "args": Namespace, "iteration": n, ...}`); otherwise the single
 * dict-valued entry holding tensors; otherwise the top-level dict's own tensors. Only tensor values
 * are kept (non-tensor entries such as ints are skipped). Nested dicts of tensors inside the chosen
 * state dict (Megatron's legacy nested format) are refused as UNSUPPORTED rather than flattened:
 * `load_state_dict` never flattens, so a flattened name would be a guess.
 */
import { HubmoeError } from '../errors.js';
import { DTYPE_BYTES } from './dtype.js';
import type { DType } from './dtype.js';
import { CODECS_ENCODE, PyCallable, PyDict, PyInstance, PyList, PyObject, PyTuple, describe, unpickle } from './pickle.js';
import type { PickleContext, PyValue } from './pickle.js';
import type { ByteSource, TensorEntry } from './safetensors.js';
import { ZipArchive } from './zip.js';
import type { ZipEntry } from './zip.js';

/** data.pkl is read into memory; a state dict's pickle is a few hundred bytes per tensor. */
export const MAX_PICKLE_BYTES = 256 * 1024 * 1024;

// ------------------------------------------------------------------------------------------------
// The inert values the allow-list produces.

/** A storage class used as a value (torch.FloatStorage, ...); its dtype, or undefined if unsupported. */
class TorchStorageType extends PyObject {
  constructor(
    readonly pyType: string,
    readonly dtype: DType | undefined,
  ) {
    super();
  }
}

/** torch.float32 and friends (they appear as GLOBALs, e.g. in Megatron's args.params_dtype). */
class TorchDtype extends PyObject {
  readonly pyType = 'torch.dtype';
  constructor(readonly name: string) {
    super();
  }
}

/** torch.Tensor / torch.nn.parameter.Parameter as the `type` argument of _rebuild_from_type_v2. */
class TorchClass extends PyObject {
  constructor(readonly pyType: string) {
    super();
  }
}

class TorchStorage extends PyObject {
  readonly pyType = 'torch.storage';
  constructor(
    readonly key: string,
    readonly dtype: DType,
    readonly numel: number,
    readonly location: string,
  ) {
    super();
  }
}

class TorchTensor extends PyObject {
  readonly pyType = 'torch.Tensor';
  constructor(
    readonly storage: TorchStorage,
    readonly offset: number,
    readonly shape: number[],
    readonly stride: number[],
  ) {
    super();
  }
}

// ------------------------------------------------------------------------------------------------
// The allow-list.

function unsafe(ctx: PickleContext, what: string): HubmoeError {
  return new HubmoeError('UNSAFE_PICKLE', `${ctx.label}: ${what}; refusing to load it (no code was run)`);
}

function corrupt(ctx: PickleContext, what: string): HubmoeError {
  return new HubmoeError('CORRUPT_FILE', `${ctx.label}: ${what}`);
}

function intList(v: PyValue, what: string, ctx: PickleContext): number[] {
  if (!(v instanceof PyTuple)) throw corrupt(ctx, `${what} is a ${describe(v)}, not a tuple`);
  return v.items.map((d) => {
    if (typeof d !== 'number' || !Number.isSafeInteger(d)) throw corrupt(ctx, `${what} holds a ${describe(d)}, not an integer`);
    return d;
  });
}

function requireNoHooks(hooks: PyValue, ctx: PickleContext): void {
  // torch always writes an empty OrderedDict (hooks are never serialized); anything else is not torch's doing.
  if (!(hooks instanceof PyDict) || hooks.map.size !== 0) {
    throw unsafe(ctx, `a tensor's backward_hooks are a non-empty ${describe(hooks)}, which torch.save never writes`);
  }
}

function rebuildTensor(args: readonly PyValue[], ctx: PickleContext, v2: boolean): TorchTensor {
  const fn = v2 ? '_rebuild_tensor_v2' : '_rebuild_tensor';
  if (v2 ? args.length !== 6 && args.length !== 7 : args.length !== 4) {
    throw corrupt(ctx, `torch._utils.${fn} is called with ${args.length} arguments`);
  }
  const [storage, offset, size, stride] = args;
  if (!(storage instanceof TorchStorage)) throw corrupt(ctx, `torch._utils.${fn} gets a ${describe(storage ?? null)} for its storage`);
  if (typeof offset !== 'number' || !Number.isSafeInteger(offset) || offset < 0) {
    throw corrupt(ctx, `torch._utils.${fn} gets storage offset ${String(offset)}`);
  }
  const shape = intList(size ?? null, 'a tensor size', ctx);
  const strides = intList(stride ?? null, 'a tensor stride', ctx);
  if (shape.length !== strides.length || shape.some((d) => d < 0)) {
    throw corrupt(ctx, `a tensor has size ${JSON.stringify(shape)} and stride ${JSON.stringify(strides)}`);
  }
  if (v2) {
    if (typeof args[4] !== 'boolean') throw corrupt(ctx, `torch._utils.${fn} gets a ${describe(args[4]!)} for requires_grad`);
    requireNoHooks(args[5]!, ctx);
    const metadata = args[6];
    if (metadata !== undefined && metadata !== null && !(metadata instanceof PyDict && metadata.map.size === 0)) {
      throw new HubmoeError('UNSUPPORTED', `${ctx.label}: a tensor carries metadata (${describe(metadata)}) such as conjugate/negative bits, which hubmoe does not apply`);
    }
  }
  return new TorchTensor(storage, offset, shape, strides);
}

const REBUILD_TENSOR_V2 = new PyCallable('torch._utils._rebuild_tensor_v2', (a, ctx) => rebuildTensor(a, ctx, true));
const REBUILD_TENSOR = new PyCallable('torch._utils._rebuild_tensor', (a, ctx) => rebuildTensor(a, ctx, false));

function rebuildParameter(args: readonly PyValue[], ctx: PickleContext, withState: boolean): TorchTensor {
  const fn = withState ? '_rebuild_parameter_with_state' : '_rebuild_parameter';
  if (args.length !== (withState ? 4 : 3)) throw corrupt(ctx, `torch._utils.${fn} is called with ${args.length} arguments`);
  const [data, requiresGrad, hooks] = args;
  if (!(data instanceof TorchTensor)) throw corrupt(ctx, `torch._utils.${fn} wraps a ${describe(data ?? null)}, not a tensor`);
  if (typeof requiresGrad !== 'boolean') throw corrupt(ctx, `torch._utils.${fn} gets a ${describe(requiresGrad ?? null)} for requires_grad`);
  requireNoHooks(hooks ?? null, ctx);
  // The state (Python attributes of the Parameter) is plain data already built; it is ignored.
  return data;
}

const REBUILD_PARAMETER = new PyCallable('torch._utils._rebuild_parameter', (a, ctx) => rebuildParameter(a, ctx, false));
const REBUILD_PARAMETER_WITH_STATE = new PyCallable('torch._utils._rebuild_parameter_with_state', (a, ctx) =>
  rebuildParameter(a, ctx, true),
);

const TENSOR_CLASS = new TorchClass('torch.Tensor');
const PARAMETER_CLASS = new TorchClass('torch.nn.parameter.Parameter');
const TENSOR_REBUILDERS = new Set<PyValue>([REBUILD_TENSOR_V2, REBUILD_TENSOR, REBUILD_PARAMETER, REBUILD_PARAMETER_WITH_STATE]);

/** torch._tensor._rebuild_from_type_v2(func, new_type, args, state): `func(*args)` as `new_type`. */
const REBUILD_FROM_TYPE_V2 = new PyCallable('torch._tensor._rebuild_from_type_v2', (args, ctx) => {
  if (args.length !== 4) throw corrupt(ctx, `torch._tensor._rebuild_from_type_v2 is called with ${args.length} arguments`);
  const [func, newType, inner] = args;
  if (!(func instanceof PyCallable) || !TENSOR_REBUILDERS.has(func)) {
    throw unsafe(ctx, `torch._tensor._rebuild_from_type_v2 calls ${describe(func ?? null)}, not one of torch's tensor rebuild functions`);
  }
  if (newType !== TENSOR_CLASS && newType !== PARAMETER_CLASS) {
    throw unsafe(ctx, `torch._tensor._rebuild_from_type_v2 makes a tensor of type ${describe(newType ?? null)}; only torch.Tensor and torch.nn.Parameter are accepted`);
  }
  if (!(inner instanceof PyTuple)) throw corrupt(ctx, `torch._tensor._rebuild_from_type_v2 gets ${describe(inner ?? null)} arguments`);
  // args[3], the tensor's Python __dict__, is plain data already built; it is ignored.
  return func.call!(inner.items, ctx);
});

const ORDERED_DICT = new PyCallable('collections.OrderedDict', (args, ctx) => {
  const d = new PyDict('collections.OrderedDict');
  if (args.length === 0) return d;
  const [pairs] = args;
  const items = pairs instanceof PyTuple || pairs instanceof PyList ? pairs.items : undefined;
  if (args.length !== 1 || !items) throw corrupt(ctx, 'collections.OrderedDict is called with arguments other than a list of pairs');
  for (const p of items) {
    if (!(p instanceof PyTuple) || p.items.length !== 2) throw corrupt(ctx, 'collections.OrderedDict gets an item that is not a pair');
    d.map.set(p.items[0]!, p.items[1]!);
  }
  return d;
});

/** torch.Size((d0, d1, ...)) is a tuple. */
const TORCH_SIZE = new PyCallable('torch.Size', (args, ctx) => {
  if (args.length !== 1 || !(args[0] instanceof PyTuple)) throw corrupt(ctx, 'torch.Size is called with arguments other than a tuple');
  return args[0];
});

/** torch.device('cuda', 0) → "cuda:0"; inert (Megatron args may hold one). */
const TORCH_DEVICE = new PyCallable('torch.device', (args, ctx) => {
  const [type, index] = args;
  if (typeof type !== 'string' || args.length > 2 || (index !== undefined && index !== null && typeof index !== 'number')) {
    throw corrupt(ctx, 'torch.device is called with unexpected arguments');
  }
  return index === undefined || index === null ? type : `${type}:${index}`;
});

/**
 * argparse.Namespace: pickled as NEWOBJ(Namespace, ()) then BUILD(dict of attributes), i.e. an
 * empty object whose attributes are set from a dict. No Namespace code runs in Python either
 * (object.__new__ + __dict__.update), and here it becomes an inert PyInstance. Allowed because
 * Megatron-style checkpoints (BlackMamba's among them) store their training args this way next to
 * the state dict; the values inside still go through the same allow-list.
 */
const ARGPARSE_NAMESPACE = new PyCallable('argparse.Namespace', undefined, (args, ctx) => {
  if (args.length !== 0) throw unsafe(ctx, 'argparse.Namespace is instantiated with arguments, which pickle never writes for it');
  return new PyInstance('argparse.Namespace');
});

const STORAGE_DTYPES: Record<string, DType | undefined> = {
  FloatStorage: 'F32',
  HalfStorage: 'F16',
  BFloat16Storage: 'BF16',
  DoubleStorage: 'F64',
  LongStorage: 'I64',
  IntStorage: 'I32',
  ShortStorage: 'I16',
  CharStorage: 'I8',
  ByteStorage: 'U8',
  BoolStorage: 'BOOL',
  // Known to torch but not to hubmoe's DType: recognized so the message says "unsupported dtype".
  ComplexFloatStorage: undefined,
  ComplexDoubleStorage: undefined,
  ComplexHalfStorage: undefined,
  QInt8Storage: undefined,
  QUInt8Storage: undefined,
  QInt32Storage: undefined,
  QUInt4x2Storage: undefined,
  QUInt2x4Storage: undefined,
  Float8_e4m3fnStorage: undefined,
  Float8_e5m2Storage: undefined,
  Float8_e4m3fnuzStorage: undefined,
  Float8_e5m2fnuzStorage: undefined,
  UInt16Storage: undefined,
  UInt32Storage: undefined,
  UInt64Storage: undefined,
};

const DTYPE_NAMES = [
  'float32', 'float', 'float16', 'half', 'bfloat16', 'float64', 'double', 'int64', 'long', 'int32', 'int', 'int16', 'short',
  'int8', 'uint8', 'bool', 'complex32', 'chalf', 'complex64', 'cfloat', 'complex128', 'cdouble', 'uint16', 'uint32', 'uint64',
  'float8_e4m3fn', 'float8_e5m2', 'float8_e4m3fnuz', 'float8_e5m2fnuz', 'qint8', 'quint8', 'qint32',
];

/** Every global a state-dict pickle may name, as "module.name" → what GLOBAL pushes. */
export function torchGlobals(): ReadonlyMap<string, PyValue> {
  const g = new Map<string, PyValue>([
    ['torch._utils._rebuild_tensor_v2', REBUILD_TENSOR_V2],
    ['torch._utils._rebuild_tensor', REBUILD_TENSOR],
    ['torch._utils._rebuild_parameter', REBUILD_PARAMETER],
    ['torch._utils._rebuild_parameter_with_state', REBUILD_PARAMETER_WITH_STATE],
    ['torch._tensor._rebuild_from_type_v2', REBUILD_FROM_TYPE_V2],
    ['torch.Tensor', TENSOR_CLASS],
    ['torch._tensor.Tensor', TENSOR_CLASS],
    ['torch.nn.parameter.Parameter', PARAMETER_CLASS],
    ['torch.storage.UntypedStorage', new TorchStorageType('torch.storage.UntypedStorage', 'U8')],
    ['torch.UntypedStorage', new TorchStorageType('torch.UntypedStorage', 'U8')],
    ['collections.OrderedDict', ORDERED_DICT],
    ['torch.Size', TORCH_SIZE],
    ['torch.device', TORCH_DEVICE],
    ['argparse.Namespace', ARGPARSE_NAMESPACE],
    ['_codecs.encode', CODECS_ENCODE],
  ]);
  for (const [name, dtype] of Object.entries(STORAGE_DTYPES)) g.set(`torch.${name}`, new TorchStorageType(`torch.${name}`, dtype));
  for (const name of DTYPE_NAMES) g.set(`torch.${name}`, new TorchDtype(name));
  return g;
}

const TORCH_GLOBALS = torchGlobals();

// ------------------------------------------------------------------------------------------------
// Reading.

const LEGACY_MAGIC = [0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

function legacyError(label: string, what: string): HubmoeError {
  return new HubmoeError(
    'UNSUPPORTED',
    `${label}: ${what}, which hubmoe does not read; re-save it with torch >= 1.6 (torch.save(torch.load(f, weights_only=True), f2)) or convert it to safetensors`,
  );
}

async function checkMagic(src: ByteSource, size: number): Promise<void> {
  const head = await src.read(0, Math.min(size, 512));
  if (head.length >= 4 && head[0] === 0x50 && head[1] === 0x4b && (head[2] === 0x03 || head[2] === 0x05)) return;
  if (LEGACY_MAGIC.every((b, i) => head[i] === b)) {
    throw legacyError(src.label, 'this is a legacy (pre-1.6, non-zip) torch.save file');
  }
  if (head.length > 262 && new TextDecoder().decode(head.subarray(257, 262)) === 'ustar') {
    throw legacyError(src.label, 'this is a tar-format torch.save file from torch < 1.0');
  }
  if (head[0] === 0x80) throw legacyError(src.label, 'this is a bare pickle, not a torch.save zip');
  if (head.length >= 9 && head[8] === 0x7b) {
    throw new HubmoeError('CORRUPT_FILE', `${src.label}: this looks like a safetensors file, not a torch.save zip; give it a .safetensors name`);
  }
  if (size === 0) throw new HubmoeError('CORRUPT_FILE', `${src.label}: the file is empty`);
  const hex = Array.from(head.subarray(0, 8), (b) => b.toString(16).padStart(2, '0')).join(' ');
  throw new HubmoeError('CORRUPT_FILE', `${src.label}: not a torch.save checkpoint (it starts with ${hex}, not a zip header)`);
}

/** The archive folder holding data.pkl ("" when at the root). */
function findPrefix(zip: ZipArchive): string {
  const found = zip.entries.map((e) => e.name).filter((n) => n === 'data.pkl' || /^[^/]+\/data\.pkl$/.test(n));
  if (found.length === 0) {
    const names = zip.entries.slice(0, 5).map((e) => e.name).join(', ');
    throw new HubmoeError('CORRUPT_FILE', `${zip.label}: a zip without data.pkl is not a torch.save checkpoint (entries: ${names}${zip.entries.length > 5 ? ', ...' : ''})`);
  }
  if (found.length > 1) throw new HubmoeError('UNSUPPORTED', `${zip.label}: the zip holds several data.pkl (${found.join(', ')})`);
  const prefix = found[0]!.slice(0, -'data.pkl'.length);
  if (zip.has(`${prefix}constants.pkl`) || zip.entries.some((e) => e.name.startsWith(`${prefix}code/`))) {
    throw new HubmoeError(
      'UNSUPPORTED',
      `${zip.label}: this is a TorchScript archive (torch.jit.save), not a torch.save checkpoint; save the model's state_dict() with torch.save or safetensors`,
    );
  }
  return prefix;
}

async function checkByteOrder(zip: ZipArchive, prefix: string): Promise<void> {
  const e = zip.entry(`${prefix}byteorder`);
  if (!e) return; // files from before the record existed are little-endian
  const text = new TextDecoder().decode(await zip.read(e, 64)).trim();
  if (text === 'little') return;
  if (text === 'big') {
    throw new HubmoeError('UNSUPPORTED', `${zip.label}: the checkpoint was saved on a big-endian machine; hubmoe reads little-endian tensors only (load and re-save it on a little-endian machine, or convert it to safetensors)`);
  }
  throw new HubmoeError('CORRUPT_FILE', `${zip.label}: ${e.name} says ${JSON.stringify(text.slice(0, 20))}, not "little" or "big"`);
}

function makePersistentLoad(storages: Map<string, TorchStorage>): (pid: PyValue, ctx: PickleContext) => PyValue {
  return (pid, ctx) => {
    if (!(pid instanceof PyTuple) || pid.items[0] !== 'storage') {
      throw corrupt(ctx, `a persistent id is ${describe(pid)}${pid instanceof PyTuple ? ` ${String(pid.items[0])}` : ''}, not a ('storage', ...) tuple`);
    }
    if (pid.items.length !== 5) {
      throw new HubmoeError('UNSUPPORTED', `${ctx.label}: a storage persistent id has ${pid.items.length} fields, not the 5 of torch.save's zip format`);
    }
    const [, type, key, location, numel] = pid.items;
    if (!(type instanceof TorchStorageType)) throw corrupt(ctx, `a storage's type is ${describe(type ?? null)}, not a torch storage class`);
    if (type.dtype === undefined) {
      throw new HubmoeError('UNSUPPORTED', `${ctx.label}: a tensor is stored as ${type.pyType}, a dtype hubmoe does not support`);
    }
    if (typeof key !== 'string' || !/^[A-Za-z0-9_.-]+$/.test(key)) throw corrupt(ctx, `a storage key is ${typeof key === 'string' ? JSON.stringify(key) : describe(key ?? null)}`);
    if (typeof location !== 'string') throw corrupt(ctx, `storage ${key} has a ${describe(location ?? null)} location`);
    if (typeof numel !== 'number' || !Number.isSafeInteger(numel) || numel < 0) throw corrupt(ctx, `storage ${key} has ${String(numel)} elements`);
    const known = storages.get(key);
    if (known) {
      if (known.dtype !== type.dtype || known.numel !== numel) {
        throw corrupt(ctx, `storage ${key} is referenced as both ${known.dtype}×${known.numel} and ${type.dtype}×${numel}`);
      }
      return known;
    }
    const s = new TorchStorage(key, type.dtype, numel, location);
    storages.set(key, s);
    return s;
  };
}

function tensorValues(d: PyDict): Array<[PyValue, TorchTensor]> {
  const out: Array<[PyValue, TorchTensor]> = [];
  for (const [k, v] of d.map) if (v instanceof TorchTensor) out.push([k, v]);
  return out;
}

/** Whether `v` is a dict with tensors among its values or in dicts nested up to `depth` below. */
function holdsTensors(v: PyValue, depth: number, seen = new Set<PyDict>()): boolean {
  if (!(v instanceof PyDict) || seen.has(v)) return false;
  seen.add(v);
  for (const x of v.map.values()) {
    if (x instanceof TorchTensor) return true;
    if (depth > 0 && holdsTensors(x, depth - 1, seen)) return true;
  }
  return false;
}

function keyName(k: PyValue): string {
  return typeof k === 'string' ? JSON.stringify(k) : describe(k);
}

/** Picks the state dict out of what data.pkl holds (see the file comment). */
function selectStateDict(root: PyValue, label: string): PyDict {
  if (!(root instanceof PyDict)) {
    throw new HubmoeError('UNSUPPORTED', `${label}: the checkpoint holds a ${describe(root)}, not a dict of tensors (a state dict)`);
  }
  const tensors = tensorValues(root);
  if (root.map.size > 0 && tensors.length === root.map.size) return root;
  for (const key of ['model', 'state_dict', 'module']) {
    const v = root.map.get(key);
    if (v instanceof PyDict && holdsTensors(v, 2)) return v;
  }
  const dicts = [...root.map].filter(([, v]) => holdsTensors(v, 2));
  if (dicts.length === 1) return dicts[0]![1] as PyDict;
  if (dicts.length > 1) {
    throw new HubmoeError(
      'UNSUPPORTED',
      `${label}: the checkpoint holds several dicts of tensors (${dicts.map(([k]) => keyName(k)).join(', ')}) and none is named "model", "state_dict" or "module"; save the model's state_dict alone`,
    );
  }
  if (tensors.length > 0) return root;
  const keys = [...root.map.keys()].slice(0, 10).map(keyName).join(', ');
  throw new HubmoeError('UNSUPPORTED', `${label}: the checkpoint holds no tensors (top-level keys: ${keys || 'none'})`);
}

/**
 * Reads the tensor index of a torch.save checkpoint: name → dtype, shape and the absolute byte range
 * of its data in the file. Validates everything before returning; reads no tensor data.
 */
export async function readTorchCheckpoint(src: ByteSource): Promise<Map<string, TensorEntry>> {
  const size = await src.size();
  await checkMagic(src, size);
  const zip = await ZipArchive.open(src);
  const prefix = findPrefix(zip);
  await checkByteOrder(zip, prefix);
  const pklEntry = zip.entry(`${prefix}data.pkl`)!;
  const pkl = await zip.read(pklEntry, MAX_PICKLE_BYTES);
  const label = `${src.label}: ${pklEntry.name}`;
  const storages = new Map<string, TorchStorage>();
  const root = unpickle(pkl, { label, globals: TORCH_GLOBALS, persistentLoad: makePersistentLoad(storages) });

  const stateDict = selectStateDict(root, src.label);
  const chosen: Array<[string, TorchTensor]> = [];
  for (const [k, v] of stateDict.map) {
    if (v instanceof TorchTensor) {
      if (typeof k !== 'string') throw new HubmoeError('UNSUPPORTED', `${src.label}: a tensor is keyed by a ${describe(k)}, not a name`);
      chosen.push([k, v]);
    } else if (holdsTensors(v, 2)) {
      throw new HubmoeError(
        'UNSUPPORTED',
        `${src.label}: the state dict nests a dict of tensors under ${keyName(k)} (Megatron's legacy nested format?); hubmoe reads flat state dicts (name → tensor) only`,
      );
    }
  }

  const entries = new Map<TorchStorage, ZipEntry>();
  for (const [, t] of chosen) {
    if (entries.has(t.storage)) continue;
    const e = zip.entry(`${prefix}data/${t.storage.key}`);
    if (!e && t.storage.location === 'meta') {
      throw new HubmoeError('UNSUPPORTED', `${src.label}: tensor storage ${t.storage.key} was saved from the meta device and holds no data`);
    }
    if (!e) throw new HubmoeError('CORRUPT_FILE', `${src.label}: storage ${t.storage.key} is missing from the archive (no ${prefix}data/${t.storage.key})`);
    entries.set(t.storage, e);
  }
  await zip.resolveDataStarts([...entries.values()]);

  const out = new Map<string, TensorEntry>();
  for (const [name, t] of chosen) {
    const s = t.storage;
    const item = DTYPE_BYTES[s.dtype];
    const e = entries.get(s)!;
    const { begin: storageBegin } = await zip.storedRange(e);
    if (e.uncompressedSize < s.numel * item) {
      throw new HubmoeError('CORRUPT_FILE', `${src.label}: storage ${s.key} has ${e.uncompressedSize} bytes, but ${s.numel} ${s.dtype} elements need ${s.numel * item}`);
    }
    let n = 1;
    for (const d of t.shape) n *= d;
    if (!Number.isSafeInteger(n)) throw new HubmoeError('CORRUPT_FILE', `${src.label}: tensor ${name} has size ${JSON.stringify(t.shape)}`);
    if (n > 0) {
      let expect = 1;
      for (let i = t.shape.length - 1; i >= 0; i--) {
        if (t.shape[i] !== 1 && t.stride[i] !== expect) {
          throw new HubmoeError(
            'UNSUPPORTED',
            `${src.label}: tensor ${name} is not contiguous (size ${JSON.stringify(t.shape)}, stride ${JSON.stringify(t.stride)}); save it with .contiguous() or convert the checkpoint to safetensors`,
          );
        }
        expect *= t.shape[i]!;
      }
    }
    if (t.offset + n > s.numel) {
      throw new HubmoeError(
        'CORRUPT_FILE',
        `${src.label}: tensor ${name} (${n} elements from offset ${t.offset}) reaches past the end of storage ${s.key} (${s.numel} elements)`,
      );
    }
    const begin = storageBegin + t.offset * item;
    out.set(name, { dtype: s.dtype, shape: t.shape, begin, end: begin + n * item });
  }
  return out;
}
