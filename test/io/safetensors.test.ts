import { copyFile, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { HubmoeError } from '../../src/errors.js';
import { f32ToBf16, toFloat32, toIntArray } from '../../src/io/dtype.js';
import { LocalDirStore, openCheckpoint } from '../../src/io/checkpoint.js';
import { SafetensorsFile, writeSafetensors, writeShardedSafetensors } from '../../src/io/safetensors.js';
import { fixture, tempDir } from '../helpers.js';

function header(obj: unknown, data = new Uint8Array(0)): Uint8Array {
  const json = Buffer.from(JSON.stringify(obj));
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

async function expectCorrupt(bytes: Uint8Array, pattern: RegExp, code = 'CORRUPT_FILE'): Promise<void> {
  const dir = await tempDir();
  const p = join(dir, `bad-${Math.random().toString(36).slice(2)}.safetensors`);
  await writeFile(p, bytes);
  const err = await SafetensorsFile.open(p).catch((e: unknown) => e);
  expect(err).toBeInstanceOf(HubmoeError);
  expect((err as HubmoeError).code).toBe(code);
  expect((err as HubmoeError).message).toMatch(pattern);
  expect((err as HubmoeError).message).toContain(p);
}

describe('safetensors reader on files written by Python', () => {
  it('reads the reference tensors safetensors.torch wrote (f32 and i64)', async () => {
    const f = await SafetensorsFile.open(fixture('jamba-demo', 'reference.safetensors'));
    const meta = JSON.parse(await readFile(fixture('jamba-demo', 'reference.json'), 'utf-8')) as { tensors: Record<string, [string, number[]]> };
    for (const [name, [dtype, shape]] of Object.entries(meta.tensors)) {
      const e = f.entry(name);
      expect(e.shape).toEqual(shape);
      expect(e.dtype).toBe(dtype === 'float32' ? 'F32' : 'I64');
    }
    const ids = toIntArray('I64', await f.readBytes('input_ids'));
    expect(ids.length).toBe(22);
    expect(ids.every((v) => Number.isInteger(v) && v >= 0 && v < 512)).toBe(true);
    const logits = toFloat32('F32', await f.readBytes('logits'));
    expect(Math.max(...logits.map(Math.abs))).toBeCloseTo(JSON.parse(await readFile(fixture('jamba-demo', 'reference.json'), 'utf-8')).logits_scale, 4);
    await f.close();
  });

  it('reads a bf16 checkpoint saved by transformers, as fp32', async () => {
    const src = await openCheckpoint(new LocalDirStore(fixture('jamba-dense', 'checkpoint')));
    const info = src.info('model.layers.0.mamba.D');
    expect(info.dtype).toBe('BF16');
    const d = await src.read('model.layers.0.mamba.D');
    expect(d.length).toBe(info.shape[0]);
    // bf16 values have 8 significant bits: rounding them again changes nothing.
    const again = toFloat32('BF16', new Uint8Array(f32ToBf16(d).buffer));
    expect(Array.from(again)).toEqual(Array.from(d));
    await src.close();
  });

  it('reads a sharded checkpoint through model.safetensors.index.json', async () => {
    const src = await openCheckpoint(new LocalDirStore(fixture('jamba-odd', 'checkpoint')));
    expect(src.files.length).toBe(12);
    const index = JSON.parse(await readFile(fixture('jamba-odd', 'checkpoint', 'model.safetensors.index.json'), 'utf-8')) as { weight_map: Record<string, string> };
    expect(src.names().sort()).toEqual(Object.keys(index.weight_map).sort());
    for (const [name, file] of Object.entries(index.weight_map)) expect(src.info(name).file).toBe(file);
    const part = await src.read('model.embed_tokens.weight', { start: 32, count: 32 });
    const whole = await src.read('model.embed_tokens.weight');
    expect(Array.from(part)).toEqual(Array.from(whole.subarray(32, 64)));
    await src.close();
  });
});

describe('safetensors writer', () => {
  it('round-trips through the reader, sharded with an index', async () => {
    const dir = await tempDir();
    const a = Float32Array.from({ length: 24 }, (_, i) => i * 0.5 - 3);
    const b = Float32Array.from({ length: 10 }, (_, i) => -i);
    const entries = [
      { name: 'a', dtype: 'F32' as const, shape: [4, 6], data: new Uint8Array(a.buffer) },
      { name: 'b', dtype: 'BF16' as const, shape: [10], data: new Uint8Array(f32ToBf16(b).buffer) },
    ];
    const files = await writeShardedSafetensors(dir, entries, 64);
    expect(files.length).toBe(2);
    const src = await openCheckpoint(new LocalDirStore(dir));
    expect(Array.from(await src.read('a'))).toEqual(Array.from(a));
    expect(Array.from(await src.read('b'))).toEqual(Array.from(b));
    await src.close();
  });

  it('never leaves a partial file when a tensor has the wrong size', async () => {
    const dir = await tempDir();
    const p = join(dir, 'x.safetensors');
    const err = await writeSafetensors(p, [{ name: 'x', dtype: 'F32', shape: [3], data: new Uint8Array(8) }]).catch((e: unknown) => e);
    expect((err as HubmoeError).code).toBe('BAD_SHAPE');
    const { readdir } = await import('node:fs/promises');
    expect(await readdir(dir)).toEqual([]);
  });
});

describe('safetensors header validation', () => {
  const ok = { t: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } };

  it('accepts a well-formed file', async () => {
    const dir = await tempDir();
    const p = join(dir, 'ok.safetensors');
    await writeFile(p, header(ok, new Uint8Array(8)));
    const f = await SafetensorsFile.open(p);
    expect(f.names()).toEqual(['t']);
    await f.close();
  });

  it('rejects a file too short for a header', () => expectCorrupt(new Uint8Array(5), /too short/));
  it('rejects a header length past the end of the file', async () => {
    const bytes = header(ok, new Uint8Array(8));
    new DataView(bytes.buffer).setBigUint64(0, 10_000n, true);
    await expectCorrupt(bytes, /runs past the end/);
  });
  it('rejects an absurd header length', async () => {
    const bytes = header(ok, new Uint8Array(8));
    new DataView(bytes.buffer).setBigUint64(0, 2n ** 40n, true);
    await expectCorrupt(bytes, /exceeds/);
  });
  it('rejects a header that is not JSON', async () => {
    const bytes = header(ok, new Uint8Array(8));
    bytes[9] = 0x7b;
    bytes[10] = 0xff;
    await expectCorrupt(bytes, /not valid UTF-8 JSON/);
  });
  it('rejects offsets past the data (a truncated file)', () => expectCorrupt(header(ok, new Uint8Array(4)), /truncated/));
  it('rejects dtype × shape that disagree with the byte length', () =>
    expectCorrupt(header({ t: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, new Uint8Array(8)), /needs 12 bytes/));
  it('rejects overlapping tensors', () =>
    expectCorrupt(
      header({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] } }, new Uint8Array(12)),
      /overlap/,
    ));
  it('rejects begin after end', () => expectCorrupt(header({ t: { dtype: 'F32', shape: [0], data_offsets: [8, 0] } }, new Uint8Array(8)), /begin after end/));
  it('rejects an unknown dtype', () => expectCorrupt(header({ t: { dtype: 'Q7', shape: [1], data_offsets: [0, 1] } }, new Uint8Array(1)), /unknown dtype Q7/));
  it('explains that FP8 checkpoints are unsupported', () =>
    expectCorrupt(header({ t: { dtype: 'F8_E4M3', shape: [1], data_offsets: [0, 1] } }, new Uint8Array(1)), /quantised/, 'UNSUPPORTED'));
  it('rejects a negative or fractional shape', () => expectCorrupt(header({ t: { dtype: 'F32', shape: [-1], data_offsets: [0, 0] } }), /invalid shape/));
});

describe('sharded checkpoint validation', () => {
  it('names a shard the index lists but the folder lacks', async () => {
    const dir = await tempDir();
    for (const f of ['config.json', 'model.safetensors.index.json', 'model-00001-of-00012.safetensors']) {
      await copyFile(fixture('jamba-odd', 'checkpoint', f), join(dir, f));
    }
    const err = await openCheckpoint(new LocalDirStore(dir)).catch((e: unknown) => e);
    expect((err as HubmoeError).code).toBe('NOT_FOUND');
    expect((err as HubmoeError).message).toMatch(/model-00002-of-00012\.safetensors listed in model\.safetensors\.index\.json is missing/);
  });

  it('names a tensor the index places in a shard that does not hold it', async () => {
    const dir = await tempDir();
    const { readdir } = await import('node:fs/promises');
    for (const f of await readdir(fixture('jamba-odd', 'checkpoint'))) await copyFile(fixture('jamba-odd', 'checkpoint', f), join(dir, f));
    const index = JSON.parse(await readFile(join(dir, 'model.safetensors.index.json'), 'utf-8')) as { weight_map: Record<string, string> };
    index.weight_map['model.layers.9.mamba.D'] = 'model-00001-of-00012.safetensors';
    await writeFile(join(dir, 'model.safetensors.index.json'), JSON.stringify(index));
    const err = await openCheckpoint(new LocalDirStore(dir)).catch((e: unknown) => e);
    expect((err as HubmoeError).code).toBe('MISSING_TENSOR');
    expect((err as HubmoeError).message).toMatch(/model\.layers\.9\.mamba\.D/);
  });
});
