/** Shared test helpers: fixture paths, reference tensors, error measures, temp dirs. */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect } from 'vitest';
import { HubmoeError } from '../src/errors.js';
import { toFloat32, toIntArray } from '../src/io/dtype.js';
import { SafetensorsFile } from '../src/io/safetensors.js';

export const ROOT = join(import.meta.dirname, '..');
export const FIXTURES = join(ROOT, 'fixtures');

export function fixture(name: string, ...rest: string[]): string {
  return join(FIXTURES, name, ...rest);
}

export interface RefTensor {
  shape: number[];
  data: Float32Array;
}

/** Reference tensors written by the fixture scripts (reference.safetensors). */
export class Reference {
  private constructor(private readonly file: SafetensorsFile) {}

  static async open(name: string): Promise<Reference> {
    return new Reference(await SafetensorsFile.open(fixture(name, 'reference.safetensors')));
  }

  has(name: string): boolean {
    return this.file.header.tensors.has(name);
  }

  async floats(name: string): Promise<RefTensor> {
    const e = this.file.entry(name);
    return { shape: e.shape, data: toFloat32(e.dtype, await this.file.readBytes(name)) };
  }

  /** An integer tensor as rows (2-D) of numbers. */
  async rows(name: string): Promise<number[][]> {
    const e = this.file.entry(name);
    const flat = toIntArray(e.dtype, await this.file.readBytes(name));
    const cols = e.shape[e.shape.length - 1]!;
    return Array.from({ length: flat.length / cols }, (_, r) => flat.slice(r * cols, (r + 1) * cols));
  }

  async close(): Promise<void> {
    await this.file.close();
  }
}

export function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!));
  return m;
}

/** max |got − want| / max |want| — the parity measure of the project (DESIGN.md, Truth). */
export function relError(got: ArrayLike<number>, want: ArrayLike<number>): number {
  if (got.length !== want.length) throw new Error(`length ${got.length} vs ${want.length}`);
  let d = 0;
  for (let i = 0; i < got.length; i++) d = Math.max(d, Math.abs(got[i]! - want[i]!));
  return d / maxAbs(want);
}

export const PARITY = 1e-4;

/** A temp dir removed after the file's tests. */
export async function tempDir(prefix = 'hubmoe-test-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });
  return dir;
}

/** Rows [r0, r1) × cols of a [rows, cols] matrix or the slice of a [B, T, V] tensor at (b, t). */
export function slice(data: Float32Array, start: number, count: number): Float32Array {
  return data.subarray(start, start + count);
}

/** The HubmoeError `p` rejects with (fails the test if it resolves or rejects with anything else). */
export async function errorOf(p: Promise<unknown>): Promise<HubmoeError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, 'expected a HubmoeError').toBeInstanceOf(HubmoeError);
  return err as HubmoeError;
}
