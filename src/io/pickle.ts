/**
 * A minimal, safe pickle virtual machine (protocols 0 to 5). It builds plain JS values and never
 * runs anything: a GLOBAL / STACK_GLOBAL resolves only through an allow-list the caller passes
 * ("module.name" → value), and any other global, INST / OBJ, the extension registry (EXT1/2/4) and
 * out-of-band buffers are refused. REDUCE and NEWOBJ only reach handlers that the allow-list put
 * there (PyCallable), and BUILD only sets attributes on inert objects.
 *
 * Python values map to: None → null, bool → boolean, int → number (bigint past 2^53), float → number,
 * str → string, bytes / bytearray → Uint8Array, tuple → PyTuple, list → PyList, dict → PyDict,
 * set / frozenset → PySet, anything an allow-listed handler makes → a PyObject subclass.
 *
 * Resource limits: every opcode consumes at least one input byte, so work is linear in the input;
 * on top of that the number of objects, the stack, the memo, MARK nesting, text lines and integer
 * sizes have fixed caps (PickleLimits), and lengths are checked against the remaining input before
 * anything is allocated.
 */
import { HubmoeError } from '../errors.js';
import type { HubmoeErrorCode } from '../errors.js';

export type PyValue = null | boolean | number | bigint | string | Uint8Array | PyTuple | PyList | PyDict | PySet | PyObject;

export class PyTuple {
  constructor(readonly items: readonly PyValue[]) {}
}

export class PyList {
  constructor(readonly items: PyValue[] = []) {}
}

/** dict or collections.OrderedDict (insertion order is kept either way). */
export class PyDict {
  /** Keys compare as JS Map keys: by value for str/int/float/bool/None, by identity for tuples. */
  readonly map = new Map<PyValue, PyValue>();
  /** Instance attributes set by BUILD (torch's state dicts carry `_metadata` this way). */
  readonly attrs = new Map<string, PyValue>();
  constructor(readonly pyType: 'dict' | 'collections.OrderedDict' = 'dict') {}
}

export class PySet {
  constructor(
    readonly items: PyValue[] = [],
    readonly frozen = false,
  ) {}
}

export interface PickleContext {
  /** "<file>: <entry>", for messages. */
  readonly label: string;
}

/** Objects made by allow-listed handlers. They hold data only. */
export abstract class PyObject {
  /** "module.name" of the Python type, for messages. */
  abstract readonly pyType: string;
  /** BUILD with `state`; objects without it refuse BUILD. */
  setState?(state: PyValue, ctx: PickleContext): void;
}

/**
 * An allow-listed global that REDUCE may call (`call`) or NEWOBJ may instantiate (`construct`).
 * Both receive the argument tuple's items and must only build values.
 */
export class PyCallable extends PyObject {
  constructor(
    readonly pyType: string,
    readonly call?: (args: readonly PyValue[], ctx: PickleContext) => PyValue,
    readonly construct?: (args: readonly PyValue[], ctx: PickleContext) => PyValue,
  ) {
    super();
  }
}

/** A plain instance whose state is a dict of attributes (e.g. argparse.Namespace). */
export class PyInstance extends PyObject {
  readonly attrs = new Map<string, PyValue>();
  constructor(readonly pyType: string) {
    super();
  }

  override setState(state: PyValue, ctx: PickleContext): void {
    applyDictState(this.attrs, state, this.pyType, ctx);
  }
}

function applyDictState(attrs: Map<string, PyValue>, state: PyValue, what: string, ctx: PickleContext): void {
  // (state, slotstate), as object.__reduce_ex__ writes for classes with __slots__.
  if (state instanceof PyTuple && state.items.length === 2) {
    for (const part of state.items) applyDictState(attrs, part, what, ctx);
    return;
  }
  if (state === null) return;
  if (!(state instanceof PyDict)) {
    throw new HubmoeError(
      'UNSAFE_PICKLE',
      `${ctx.label}: BUILD gives ${what} a ${describe(state)} state, not a dict; refusing to load it (no code was run)`,
    );
  }
  for (const [k, v] of state.map) {
    if (typeof k !== 'string') throw new HubmoeError('CORRUPT_FILE', `${ctx.label}: BUILD gives ${what} an attribute named by a ${describe(k)}`);
    attrs.set(k, v);
  }
}

/** `_codecs.encode(str, 'latin1')`: how Python 3 writes `bytes` at protocols 0 to 2. Inert. */
export const CODECS_ENCODE = new PyCallable('_codecs.encode', (args, ctx) => {
  const [text, encoding] = args;
  if (args.length !== 2 || typeof text !== 'string' || (encoding !== 'latin1' && encoding !== 'latin-1')) {
    throw new HubmoeError('UNSAFE_PICKLE', `${ctx.label}: _codecs.encode is called with arguments a pickled bytes object never has; refusing to load it (no code was run)`);
  }
  const out = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c > 0xff) throw new HubmoeError('CORRUPT_FILE', `${ctx.label}: _codecs.encode of a non-latin-1 string`);
    out[i] = c;
  }
  return out;
});

/**
 * Python 2 module names that Python 3 writes at protocols 0 to 2 (pickle's fix_imports) and maps back
 * on load, as their Python 3 names: `subprocess.Popen` is written `commands.Popen`, `eval` is
 * `__builtin__.eval`. The allow-list is looked up, and refusals are worded, with the Python 3 name.
 * (The subset of _compat_pickle.IMPORT_MAPPING that matters for naming what a pickle reaches for.)
 */
const PY2_MODULES: Record<string, string> = {
  __builtin__: 'builtins',
  copy_reg: 'copyreg',
  commands: 'subprocess',
  cPickle: 'pickle',
  exceptions: 'builtins',
  UserDict: 'collections',
  UserList: 'collections',
  UserString: 'collections',
  Queue: 'queue',
  SocketServer: 'socketserver',
  urllib2: 'urllib.request',
  httplib: 'http.client',
  thread: '_thread',
  dummy_thread: '_dummy_thread',
  __main__: '__main__',
};

export interface PickleLimits {
  /** Objects (containers, strings, numbers past small ints...) created. */
  maxObjects: number;
  maxStack: number;
  maxMemo: number;
  /** MARK nesting. */
  maxDepth: number;
  /** Text-opcode lines (GLOBAL names, INT, FLOAT, ...). */
  maxLine: number;
  /** Bytes of a LONG1/LONG4 integer, and digits of an INT/LONG text integer. */
  maxIntBytes: number;
}

export const DEFAULT_PICKLE_LIMITS: PickleLimits = {
  maxObjects: 10_000_000,
  maxStack: 10_000_000,
  maxMemo: 10_000_000,
  maxDepth: 10_000,
  maxLine: 65_536,
  maxIntBytes: 4_300, // Python's own limit on the digits of int(str)
};

export interface UnpickleOptions {
  /** "<file>: <entry>", used in every message. */
  label: string;
  /** The allow-list: "module.name" → what GLOBAL pushes (a PyCallable for anything called). */
  globals: ReadonlyMap<string, PyValue>;
  /** BINPERSID / PERSID; without it a persistent id is refused. */
  persistentLoad?: (pid: PyValue, ctx: PickleContext) => PyValue;
  /** Completes "which <purpose> never needs" in refusals; default "a state dict". */
  purpose?: string;
  limits?: Partial<PickleLimits>;
}

/** A short description of a value for messages. */
export function describe(v: PyValue): string {
  if (v === null) return 'None';
  if (typeof v === 'boolean') return 'bool';
  if (typeof v === 'number') return Number.isInteger(v) ? 'int' : 'float';
  if (typeof v === 'bigint') return 'int';
  if (typeof v === 'string') return 'str';
  if (v instanceof Uint8Array) return 'bytes';
  if (v instanceof PyTuple) return 'tuple';
  if (v instanceof PyList) return 'list';
  if (v instanceof PyDict) return v.pyType;
  if (v instanceof PySet) return v.frozen ? 'frozenset' : 'set';
  return v.pyType;
}

const OPNAMES: Record<number, string> = {
  0x28: 'MARK', 0x2e: 'STOP', 0x30: 'POP', 0x31: 'POP_MARK', 0x32: 'DUP', 0x46: 'FLOAT', 0x49: 'INT', 0x4a: 'BININT',
  0x4b: 'BININT1', 0x4c: 'LONG', 0x4d: 'BININT2', 0x4e: 'NONE', 0x50: 'PERSID', 0x51: 'BINPERSID', 0x52: 'REDUCE',
  0x53: 'STRING', 0x54: 'BINSTRING', 0x55: 'SHORT_BINSTRING', 0x56: 'UNICODE', 0x58: 'BINUNICODE', 0x61: 'APPEND',
  0x62: 'BUILD', 0x63: 'GLOBAL', 0x64: 'DICT', 0x7d: 'EMPTY_DICT', 0x65: 'APPENDS', 0x67: 'GET', 0x68: 'BINGET',
  0x69: 'INST', 0x6a: 'LONG_BINGET', 0x6c: 'LIST', 0x5d: 'EMPTY_LIST', 0x6f: 'OBJ', 0x70: 'PUT', 0x71: 'BINPUT',
  0x72: 'LONG_BINPUT', 0x73: 'SETITEM', 0x74: 'TUPLE', 0x29: 'EMPTY_TUPLE', 0x75: 'SETITEMS', 0x47: 'BINFLOAT',
  0x80: 'PROTO', 0x81: 'NEWOBJ', 0x82: 'EXT1', 0x83: 'EXT2', 0x84: 'EXT4', 0x85: 'TUPLE1', 0x86: 'TUPLE2', 0x87: 'TUPLE3',
  0x88: 'NEWTRUE', 0x89: 'NEWFALSE', 0x8a: 'LONG1', 0x8b: 'LONG4', 0x42: 'BINBYTES', 0x43: 'SHORT_BINBYTES',
  0x8c: 'SHORT_BINUNICODE', 0x8d: 'BINUNICODE8', 0x8e: 'BINBYTES8', 0x8f: 'EMPTY_SET', 0x90: 'ADDITEMS', 0x91: 'FROZENSET',
  0x92: 'NEWOBJ_EX', 0x93: 'STACK_GLOBAL', 0x94: 'MEMOIZE', 0x95: 'FRAME', 0x96: 'BYTEARRAY8', 0x97: 'NEXT_BUFFER',
  0x98: 'READONLY_BUFFER',
};

const utf8 = new TextDecoder('utf-8');

/** Runs the pickle in `data` and returns the object it describes. */
export function unpickle(data: Uint8Array, options: UnpickleOptions): PyValue {
  return new Machine(data, options).run();
}

class Machine implements PickleContext {
  readonly label: string;
  private readonly limits: PickleLimits;
  private readonly purpose: string;
  private pos = 0;
  private op = 0;
  private opPos = 0;
  private stack: PyValue[] = [];
  private readonly meta: PyValue[][] = [];
  private readonly memo = new Map<number, PyValue>();
  private objects = 0;

  constructor(
    private readonly data: Uint8Array,
    private readonly options: UnpickleOptions,
  ) {
    this.label = options.label;
    this.purpose = options.purpose ?? 'a state dict';
    this.limits = { ...DEFAULT_PICKLE_LIMITS, ...options.limits };
  }

  // ---- errors

  private fail(code: HubmoeErrorCode, what: string): HubmoeError {
    return new HubmoeError(code, `${this.label}: ${what}`);
  }

  private corrupt(what: string): HubmoeError {
    const op = OPNAMES[this.op] ?? `0x${this.op.toString(16).padStart(2, '0')}`;
    return this.fail('CORRUPT_FILE', `invalid pickle: ${what} (opcode ${op} at byte ${this.opPos})`);
  }

  private refuse(what: string): HubmoeError {
    return this.fail('UNSAFE_PICKLE', `refers to ${what}, which ${this.purpose} never needs; refusing to load it (no code was run)`);
  }

  private overLimit(what: string): HubmoeError {
    return this.fail('UNSAFE_PICKLE', `the pickle exceeds hubmoe's limit on ${what}; refusing to load it (no code was run)`);
  }

  // ---- input

  private need(n: number): void {
    if (n > this.data.length - this.pos) {
      throw this.fail(
        'CORRUPT_FILE',
        `invalid pickle: it ends in the middle of opcode ${OPNAMES[this.op] ?? this.op} at byte ${this.opPos} (truncated?)`,
      );
    }
  }

  private u8(): number {
    this.need(1);
    return this.data[this.pos++]!;
  }

  private u16(): number {
    this.need(2);
    const v = this.data[this.pos]! | (this.data[this.pos + 1]! << 8);
    this.pos += 2;
    return v;
  }

  private u32(): number {
    this.need(4);
    const d = this.data;
    const p = this.pos;
    this.pos += 4;
    return (d[p]! | (d[p + 1]! << 8) | (d[p + 2]! << 16) | (d[p + 3]! << 24)) >>> 0;
  }

  private i32(): number {
    return this.u32() | 0;
  }

  /** A u64 length; anything past the remaining input is a truncation, checked before use. */
  private u64(): number {
    const lo = this.u32();
    const hi = this.u32();
    const v = hi * 0x1_0000_0000 + lo;
    return Number.isSafeInteger(v) ? v : Number.MAX_SAFE_INTEGER;
  }

  private bytes(n: number): Uint8Array {
    if (n < 0) throw this.corrupt(`negative length ${n}`);
    this.need(n);
    const out = this.data.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  /** A text line without its '\n' (latin-1; only ASCII is expected). */
  private line(): string {
    const start = this.pos;
    const limit = Math.min(this.data.length, start + this.limits.maxLine + 1);
    let i = start;
    while (i < limit && this.data[i] !== 0x0a) i++;
    if (i >= limit) {
      if (limit === this.data.length) this.need(this.data.length - start + 1);
      throw this.overLimit(`text lines (${this.limits.maxLine} bytes)`);
    }
    this.pos = i + 1;
    let s = '';
    for (let j = start; j < i; j++) s += String.fromCharCode(this.data[j]!);
    return s;
  }

  // ---- stack

  private count(): void {
    if (++this.objects > this.limits.maxObjects) throw this.overLimit(`objects (${this.limits.maxObjects})`);
  }

  private push(v: PyValue): void {
    if (this.stack.length >= this.limits.maxStack) throw this.overLimit(`stack size (${this.limits.maxStack})`);
    this.stack.push(v);
  }

  private pop(): PyValue {
    if (this.stack.length === 0) throw this.corrupt('stack underflow');
    return this.stack.pop()!;
  }

  private top(): PyValue {
    if (this.stack.length === 0) throw this.corrupt('stack underflow');
    return this.stack[this.stack.length - 1]!;
  }

  private popMark(): PyValue[] {
    const items = this.stack;
    const prev = this.meta.pop();
    if (prev === undefined) throw this.corrupt('no MARK to pop to');
    this.stack = prev;
    return items;
  }

  private memoPut(index: number): void {
    if (!this.memo.has(index) && this.memo.size >= this.limits.maxMemo) throw this.overLimit(`memo entries (${this.limits.maxMemo})`);
    this.memo.set(index, this.top());
  }

  private memoGet(index: number): void {
    if (!this.memo.has(index)) throw this.corrupt(`memo has no entry ${index}`);
    this.push(this.memo.get(index)!);
  }

  // ---- values

  private int(big: bigint): number | bigint {
    return big >= BigInt(Number.MIN_SAFE_INTEGER) && big <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(big) : big;
  }

  private decimal(text: string): number | bigint {
    const t = text.trim();
    if (!/^[+-]?\d+$/.test(t)) throw this.corrupt(`${JSON.stringify(t.slice(0, 40))} is not an integer`);
    if (t.length > this.limits.maxIntBytes) throw this.overLimit(`integer size (${this.limits.maxIntBytes} digits)`);
    return this.int(BigInt(t));
  }

  private littleEndianInt(b: Uint8Array): number | bigint {
    if (b.length === 0) return 0;
    if (b.length > this.limits.maxIntBytes) throw this.overLimit(`integer size (${this.limits.maxIntBytes} bytes)`);
    let v = 0n;
    for (let i = b.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]!);
    if (b[b.length - 1]! & 0x80) v -= 1n << BigInt(8 * b.length);
    return this.int(v);
  }

  private text(b: Uint8Array): string {
    this.count();
    return utf8.decode(b);
  }

  private copyBytes(b: Uint8Array): Uint8Array {
    this.count();
    return b.slice();
  }

  private float(text: string): number {
    const t = text.trim();
    if (t === 'inf' || t === '+inf') return Infinity;
    if (t === '-inf') return -Infinity;
    if (t === 'nan' || t === '-nan') return NaN;
    if (!/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(t)) throw this.corrupt(`${JSON.stringify(t.slice(0, 40))} is not a float`);
    return Number(t);
  }

  /** protocol-0 UNICODE: raw-unicode-escape (\uXXXX and \UXXXXXXXX escapes, other bytes latin-1). */
  private rawUnicodeEscape(s: string): string {
    let out = '';
    for (let i = 0; i < s.length; i++) {
      const c = s[i]!;
      if (c === '\\' && (s[i + 1] === 'u' || s[i + 1] === 'U')) {
        const n = s[i + 1] === 'u' ? 4 : 8;
        const hex = s.slice(i + 2, i + 2 + n);
        if (hex.length !== n || !/^[0-9a-fA-F]+$/.test(hex)) throw this.corrupt('bad \\u escape in UNICODE');
        const cp = parseInt(hex, 16);
        if (cp > 0x10ffff) throw this.corrupt('bad \\U escape in UNICODE');
        out += String.fromCodePoint(cp);
        i += 1 + n;
      } else out += c;
    }
    return out;
  }

  /** protocol-0 STRING: a quoted Python 2 str literal, escapes decoded, then read as UTF-8. */
  private pyStringLiteral(s: string): string {
    const q = s[0];
    if (s.length < 2 || (q !== "'" && q !== '"') || s[s.length - 1] !== q) throw this.corrupt('STRING argument is not quoted');
    const body = s.slice(1, -1);
    const bytes: number[] = [];
    const simple: Record<string, number> = { '\\': 0x5c, "'": 0x27, '"': 0x22, a: 7, b: 8, f: 12, n: 10, r: 13, t: 9, v: 11 };
    for (let i = 0; i < body.length; i++) {
      const c = body[i]!;
      if (c !== '\\') {
        bytes.push(c.charCodeAt(0) & 0xff);
        continue;
      }
      const e = body[++i];
      if (e === undefined) throw this.corrupt('STRING ends in a backslash');
      if (e in simple) bytes.push(simple[e]!);
      else if (e === '\n') continue;
      else if (e === 'x') {
        const hex = body.slice(i + 1, i + 3);
        if (!/^[0-9a-fA-F]{2}$/.test(hex)) throw this.corrupt('bad \\x escape in STRING');
        bytes.push(parseInt(hex, 16));
        i += 2;
      } else if (/[0-7]/.test(e)) {
        let oct = e;
        while (oct.length < 3 && /[0-7]/.test(body[i + 1] ?? '')) oct += body[++i];
        bytes.push(parseInt(oct, 8) & 0xff);
      } else bytes.push(0x5c, e.charCodeAt(0) & 0xff);
    }
    return this.text(Uint8Array.from(bytes));
  }

  private resolveGlobal(module: string, name: string): PyValue {
    const mod = PY2_MODULES[module] ?? module;
    const value = this.options.globals.get(`${mod}.${name}`);
    if (value === undefined) throw this.refuse(mod === module ? `${module}.${name}` : `${module}.${name} (${mod}.${name} in Python 3)`);
    return value;
  }

  private nameOf(v: PyValue): string {
    return v instanceof PyObject ? v.pyType : `a ${describe(v)}`;
  }

  private asTuple(v: PyValue, what: string): readonly PyValue[] {
    if (!(v instanceof PyTuple)) throw this.corrupt(`${what} arguments are a ${describe(v)}, not a tuple`);
    return v.items;
  }

  private setItems(target: PyValue, items: PyValue[]): void {
    if (!(target instanceof PyDict)) throw this.refuse(`item assignment on ${this.nameOf(target)} (SETITEM)`);
    if (items.length % 2) throw this.corrupt('odd number of items for SETITEMS');
    for (let i = 0; i < items.length; i += 2) target.map.set(items[i]!, items[i + 1]!);
  }

  private appendItems(target: PyValue, items: PyValue[]): void {
    if (!(target instanceof PyList)) throw this.refuse(`append on ${this.nameOf(target)} (APPEND)`);
    for (const v of items) target.items.push(v);
  }

  private addItems(target: PyValue, items: PyValue[]): void {
    if (!(target instanceof PySet) || target.frozen) throw this.refuse(`add on ${this.nameOf(target)} (ADDITEMS)`);
    for (const v of items) target.items.push(v);
  }

  private persistent(pid: PyValue): PyValue {
    const load = this.options.persistentLoad;
    if (!load) throw this.fail('UNSAFE_PICKLE', 'the pickle holds a persistent id, which nothing here resolves; refusing to load it (no code was run)');
    return load(pid, this);
  }

  // ---- the loop

  run(): PyValue {
    const d = this.data;
    for (;;) {
      if (this.pos >= d.length) {
        this.op = 0;
        throw this.fail('CORRUPT_FILE', `invalid pickle: it ends at byte ${d.length} without a STOP opcode (truncated?)`);
      }
      this.opPos = this.pos;
      const op = (this.op = d[this.pos++]!);
      switch (op) {
        case 0x80: {
          // PROTO
          const proto = this.u8();
          if (proto > 5) throw this.fail('UNSUPPORTED', `pickle protocol ${proto} is newer than the 5 hubmoe reads`);
          break;
        }
        case 0x95: {
          // FRAME: a hint for buffered readers; the whole pickle is in memory already.
          const n = this.u64();
          if (n > d.length - this.pos) this.need(n);
          break;
        }
        case 0x2e: // STOP
          return this.pop();
        case 0x28: // MARK
          if (this.meta.length >= this.limits.maxDepth) throw this.overLimit(`MARK nesting (${this.limits.maxDepth})`);
          this.meta.push(this.stack);
          this.stack = [];
          break;
        case 0x30: // POP
          if (this.stack.length) this.stack.pop();
          else this.popMark();
          break;
        case 0x31: // POP_MARK
          this.popMark();
          break;
        case 0x32: // DUP
          this.push(this.top());
          break;

        // ---- globals and calls
        case 0x63: {
          // GLOBAL
          const module = this.line();
          const name = this.line();
          this.push(this.resolveGlobal(module, name));
          break;
        }
        case 0x93: {
          // STACK_GLOBAL
          const name = this.pop();
          const module = this.pop();
          if (typeof module !== 'string' || typeof name !== 'string') throw this.corrupt('STACK_GLOBAL needs two strings');
          this.push(this.resolveGlobal(module, name));
          break;
        }
        case 0x69: {
          // INST: instantiates module.name with the items since MARK; never allowed.
          const module = this.line();
          const name = this.line();
          const mod = PY2_MODULES[module] ?? module;
          throw this.refuse(`${module}.${name}${mod === module ? '' : ` (${mod}.${name} in Python 3)`}, instantiated through INST`);
        }
        case 0x6f: {
          // OBJ
          const items = this.popMark();
          const cls = items[0];
          throw this.refuse(`${cls === undefined ? 'a class' : this.nameOf(cls)} (instantiated through OBJ)`);
        }
        case 0x52: {
          // REDUCE
          const args = this.pop();
          const f = this.pop();
          if (!(f instanceof PyCallable) || !f.call) throw this.refuse(`a call of ${this.nameOf(f)} (REDUCE)`);
          this.count();
          this.push(f.call(this.asTuple(args, f.pyType), this));
          break;
        }
        case 0x81: {
          // NEWOBJ: cls.__new__(cls, *args)
          const args = this.pop();
          const cls = this.pop();
          if (!(cls instanceof PyCallable) || !cls.construct) throw this.refuse(`an instance of ${this.nameOf(cls)} (NEWOBJ)`);
          this.count();
          this.push(cls.construct(this.asTuple(args, cls.pyType), this));
          break;
        }
        case 0x92: {
          // NEWOBJ_EX: cls.__new__(cls, *args, **kwargs)
          const kwargs = this.pop();
          const args = this.pop();
          const cls = this.pop();
          if (!(cls instanceof PyCallable) || !cls.construct) throw this.refuse(`an instance of ${this.nameOf(cls)} (NEWOBJ_EX)`);
          if (!(kwargs instanceof PyDict) || kwargs.map.size) throw this.refuse(`an instance of ${cls.pyType} with keyword arguments (NEWOBJ_EX)`);
          this.count();
          this.push(cls.construct(this.asTuple(args, cls.pyType), this));
          break;
        }
        case 0x62: {
          // BUILD
          const state = this.pop();
          const obj = this.top();
          if (obj instanceof PyDict) applyDictState(obj.attrs, state, obj.pyType, this);
          else if (obj instanceof PyObject && obj.setState) obj.setState(state, this);
          else throw this.refuse(`setting the state of ${this.nameOf(obj)} (BUILD)`);
          break;
        }
        case 0x50: // PERSID
          this.push(this.persistent(this.line()));
          break;
        case 0x51: // BINPERSID
          this.push(this.persistent(this.pop()));
          break;
        case 0x82:
        case 0x83:
        case 0x84: {
          // EXT1/2/4: objects from copyreg's extension registry, which is process state we lack.
          const code = op === 0x82 ? this.u8() : op === 0x83 ? this.u16() : this.i32();
          throw this.refuse(`the extension registry (${OPNAMES[op]} code ${code})`);
        }
        case 0x97:
        case 0x98:
          throw this.fail('UNSUPPORTED', `pickle uses out-of-band buffers (${OPNAMES[op]}), which torch.save never writes`);

        // ---- containers
        case 0x7d: // EMPTY_DICT
          this.count();
          this.push(new PyDict());
          break;
        case 0x64: {
          // DICT
          const items = this.popMark();
          this.count();
          const dict = new PyDict();
          this.setItems(dict, items);
          this.push(dict);
          break;
        }
        case 0x73: {
          // SETITEM
          const v = this.pop();
          const k = this.pop();
          this.setItems(this.top(), [k, v]);
          break;
        }
        case 0x75: {
          // SETITEMS
          const items = this.popMark();
          this.setItems(this.top(), items);
          break;
        }
        case 0x5d: // EMPTY_LIST
          this.count();
          this.push(new PyList());
          break;
        case 0x6c: // LIST
          this.count();
          this.push(new PyList(this.popMark()));
          break;
        case 0x61: {
          // APPEND
          const v = this.pop();
          this.appendItems(this.top(), [v]);
          break;
        }
        case 0x65: {
          // APPENDS
          const items = this.popMark();
          this.appendItems(this.top(), items);
          break;
        }
        case 0x29: // EMPTY_TUPLE
          this.count();
          this.push(new PyTuple([]));
          break;
        case 0x74: // TUPLE
          this.count();
          this.push(new PyTuple(this.popMark()));
          break;
        case 0x85:
        case 0x86:
        case 0x87: {
          // TUPLE1/2/3
          const n = op - 0x84;
          if (this.stack.length < n) throw this.corrupt('stack underflow');
          this.count();
          this.push(new PyTuple(this.stack.splice(this.stack.length - n, n)));
          break;
        }
        case 0x8f: // EMPTY_SET
          this.count();
          this.push(new PySet());
          break;
        case 0x90: {
          // ADDITEMS
          const items = this.popMark();
          this.addItems(this.top(), items);
          break;
        }
        case 0x91: // FROZENSET
          this.count();
          this.push(new PySet(this.popMark(), true));
          break;

        // ---- constants and numbers
        case 0x4e: // NONE
          this.push(null);
          break;
        case 0x88: // NEWTRUE
          this.push(true);
          break;
        case 0x89: // NEWFALSE
          this.push(false);
          break;
        case 0x49: {
          // INT ("00"/"01" are protocol 0's False/True)
          const t = this.line();
          this.push(t === '00' ? false : t === '01' ? true : this.decimal(t));
          break;
        }
        case 0x4a: // BININT
          this.push(this.i32());
          break;
        case 0x4b: // BININT1
          this.push(this.u8());
          break;
        case 0x4d: // BININT2
          this.push(this.u16());
          break;
        case 0x4c: {
          // LONG
          const t = this.line();
          this.count();
          this.push(this.decimal(t.endsWith('L') ? t.slice(0, -1) : t));
          break;
        }
        case 0x8a: {
          // LONG1
          const n = this.u8();
          this.count();
          this.push(this.littleEndianInt(this.bytes(n)));
          break;
        }
        case 0x8b: {
          // LONG4
          const n = this.i32();
          if (n < 0) throw this.corrupt('negative LONG4 length');
          if (n > this.limits.maxIntBytes) throw this.overLimit(`integer size (${this.limits.maxIntBytes} bytes)`);
          this.count();
          this.push(this.littleEndianInt(this.bytes(n)));
          break;
        }
        case 0x46: // FLOAT
          this.push(this.float(this.line()));
          break;
        case 0x47: {
          // BINFLOAT (big-endian)
          const b = this.bytes(8);
          this.push(new DataView(b.buffer, b.byteOffset, 8).getFloat64(0, false));
          break;
        }

        // ---- strings and bytes
        case 0x53: // STRING
          this.push(this.pyStringLiteral(this.line()));
          break;
        case 0x54: // BINSTRING
          this.push(this.text(this.bytes(this.i32())));
          break;
        case 0x55: // SHORT_BINSTRING
          this.push(this.text(this.bytes(this.u8())));
          break;
        case 0x56: // UNICODE
          this.count();
          this.push(this.rawUnicodeEscape(this.line()));
          break;
        case 0x58: // BINUNICODE
          this.push(this.text(this.bytes(this.u32())));
          break;
        case 0x8c: // SHORT_BINUNICODE
          this.push(this.text(this.bytes(this.u8())));
          break;
        case 0x8d: // BINUNICODE8
          this.push(this.text(this.bytes(this.u64())));
          break;
        case 0x42: // BINBYTES
          this.push(this.copyBytes(this.bytes(this.u32())));
          break;
        case 0x43: // SHORT_BINBYTES
          this.push(this.copyBytes(this.bytes(this.u8())));
          break;
        case 0x8e: // BINBYTES8
        case 0x96: // BYTEARRAY8
          this.push(this.copyBytes(this.bytes(this.u64())));
          break;

        // ---- memo
        case 0x94: // MEMOIZE
          this.memoPut(this.memo.size);
          break;
        case 0x70: {
          // PUT
          const i = this.decimal(this.line());
          if (typeof i !== 'number' || i < 0) throw this.corrupt('bad memo index');
          this.memoPut(i);
          break;
        }
        case 0x71: // BINPUT
          this.memoPut(this.u8());
          break;
        case 0x72: // LONG_BINPUT
          this.memoPut(this.u32());
          break;
        case 0x67: {
          // GET
          const i = this.decimal(this.line());
          if (typeof i !== 'number') throw this.corrupt('bad memo index');
          this.memoGet(i);
          break;
        }
        case 0x68: // BINGET
          this.memoGet(this.u8());
          break;
        case 0x6a: // LONG_BINGET
          this.memoGet(this.u32());
          break;

        default:
          throw this.fail(
            'CORRUPT_FILE',
            `invalid pickle: unknown opcode 0x${op.toString(16).padStart(2, '0')} at byte ${this.opPos}; the file is damaged or not a pickle`,
          );
      }
    }
  }
}
