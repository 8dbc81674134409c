/**
 * Element types of tensors as stored on disk, and conversions between the float formats.
 * Node 20 has neither bf16 nor Float16Array, so half-precision values travel as Uint16 bit patterns.
 */
import { HubmoeError } from '../errors.js';

export type DType = 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';

export const DTYPE_BYTES: Record<DType, number> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
};

export function isDType(s: string): s is DType {
  return Object.prototype.hasOwnProperty.call(DTYPE_BYTES, s);
}

export function isFloatDType(d: DType): boolean {
  return d === 'F64' || d === 'F32' || d === 'F16' || d === 'BF16';
}

export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

export function bf16ToF32(bits: Uint16Array): Float32Array {
  const out = new Float32Array(bits.length);
  const outBits = new Uint32Array(out.buffer);
  for (let i = 0; i < bits.length; i++) outBits[i] = bits[i]! << 16;
  return out;
}

/** Round-to-nearest-even, NaN kept quiet. */
export function f32ToBf16(values: Float32Array): Uint16Array {
  const inBits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) {
    const u = inBits[i]!;
    if ((u & 0x7f800000) === 0x7f800000 && (u & 0x007fffff) !== 0) {
      out[i] = (u >>> 16) | 0x0040;
    } else {
      out[i] = ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
    }
  }
  return out;
}

export function f16BitsToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 0x1f) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

export function f16ToF32(bits: Uint16Array): Float32Array {
  const out = new Float32Array(bits.length);
  for (let i = 0; i < bits.length; i++) out[i] = f16BitsToF32(bits[i]!);
  return out;
}

/** IEEE binary16 with round-to-nearest-even; overflow goes to ±Inf. */
export function f32ToF16Bits(value: number): number {
  f32Scratch[0] = value;
  const x = u32Scratch[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    const rest = mant & ((1 << shift) - 1);
    let r = mant >>> shift;
    if (rest > half || (rest === half && (r & 1))) r++;
    return sign | r;
  }
  let r = mant >>> 13;
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (r & 1))) {
    r++;
    if (r === 0x400) {
      r = 0;
      e++;
      if (e >= 0x1f) return sign | 0x7c00;
    }
  }
  return sign | (e << 10) | r;
}

export function f32ToF16(values: Float32Array): Uint16Array {
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = f32ToF16Bits(values[i]!);
  return out;
}

/** Decodes little-endian raw bytes of a float dtype into fp32 (copying; `bytes` may be unaligned). */
export function toFloat32(dtype: DType, bytes: Uint8Array): Float32Array {
  const n = bytes.byteLength / DTYPE_BYTES[dtype];
  const aligned = alignedCopy(bytes, DTYPE_BYTES[dtype]);
  switch (dtype) {
    case 'F32':
      return new Float32Array(aligned.buffer, aligned.byteOffset, n);
    case 'F16':
      return f16ToF32(new Uint16Array(aligned.buffer, aligned.byteOffset, n));
    case 'BF16':
      return bf16ToF32(new Uint16Array(aligned.buffer, aligned.byteOffset, n));
    case 'F64':
      return Float32Array.from(new Float64Array(aligned.buffer, aligned.byteOffset, n));
    default:
      throw new HubmoeError('UNSUPPORTED', `cannot read a ${dtype} tensor as floating point`);
  }
}

/** Returns `bytes` itself when its offset suits `alignment`, else a copy that does. */
export function alignedCopy(bytes: Uint8Array, alignment: number): Uint8Array {
  if (bytes.byteOffset % alignment === 0) return bytes;
  const copy = new Uint8Array(bytes.byteLength);
  copy.set(bytes);
  return copy;
}

/** Decodes little-endian integer bytes (I64/I32/I16/I8/U8/BOOL) into plain numbers. */
export function toIntArray(dtype: DType, bytes: Uint8Array): number[] {
  const aligned = alignedCopy(bytes, DTYPE_BYTES[dtype]);
  const n = bytes.byteLength / DTYPE_BYTES[dtype];
  switch (dtype) {
    case 'I64':
      return Array.from(new BigInt64Array(aligned.buffer, aligned.byteOffset, n), (v) => Number(v));
    case 'I32':
      return Array.from(new Int32Array(aligned.buffer, aligned.byteOffset, n));
    case 'I16':
      return Array.from(new Int16Array(aligned.buffer, aligned.byteOffset, n));
    case 'I8':
      return Array.from(new Int8Array(aligned.buffer, aligned.byteOffset, n));
    case 'U8':
    case 'BOOL':
      return Array.from(aligned.subarray(0, n));
    default:
      throw new HubmoeError('UNSUPPORTED', `cannot read a ${dtype} tensor as integers`);
  }
}
