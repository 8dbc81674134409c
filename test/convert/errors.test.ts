import { cp, readdir, readFile, truncate, writeFile, mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { convert } from '../../src/convert.js';
import { HubmoeError } from '../../src/errors.js';
import { SafetensorsFile, writeSafetensors } from '../../src/io/safetensors.js';
import { fixture, tempDir } from '../helpers.js';

/** A copy of a fixture checkpoint to break. */
async function copyOf(name: string): Promise<{ dir: string; ckpt: string }> {
  const dir = await tempDir();
  const ckpt = join(dir, 'ckpt');
  await cp(fixture(name, 'checkpoint'), ckpt, { recursive: true });
  return { dir, ckpt };
}

/** Rewrites model.safetensors through `edit` (which may drop, rename or reshape entries). */
async function rewrite(
  ckpt: string,
  edit: (entries: Array<{ name: string; dtype: 'F32'; shape: number[]; data: Uint8Array }>) => typeof entries,
): Promise<void> {
  const p = join(ckpt, 'model.safetensors');
  const st = await SafetensorsFile.open(p);
  const entries = await Promise.all(st.names().map(async (n) => ({ name: n, dtype: 'F32' as const, shape: st.entry(n).shape, data: await st.readBytes(n) })));
  await st.close();
  await writeSafetensors(p, edit(entries));
}

async function expectFailure(ckpt: string, dir: string, code: string, pattern: RegExp): Promise<void> {
  const outDir = join(dir, 'out');
  const err = await convert(ckpt, { outDir }).catch((e: unknown) => e);
  expect(err).toBeInstanceOf(HubmoeError);
  expect((err as HubmoeError).code).toBe(code);
  expect((err as HubmoeError).message).toMatch(pattern);
  // Nothing half-written: no output dir, no temporary dir next to it.
  expect((await readdir(dir)).filter((f) => f !== 'ckpt')).toEqual([]);
}

describe('convert: bad input gives a HubmoeError and writes nothing', () => {
  it('a truncated shard', async () => {
    const { dir, ckpt } = await copyOf('jamba-odd');
    await truncate(join(ckpt, 'model-00003-of-00012.safetensors'), 300);
    await expectFailure(ckpt, dir, 'CORRUPT_FILE', /model-00003-of-00012\.safetensors.*truncated/);
  });

  it('a corrupt header', async () => {
    const { dir, ckpt } = await copyOf('jamba-demo');
    const p = join(ckpt, 'model.safetensors');
    const bytes = await readFile(p);
    bytes.fill(0x5b, 8, 40);
    await writeFile(p, bytes);
    await expectFailure(ckpt, dir, 'CORRUPT_FILE', /model\.safetensors: invalid safetensors file: header is not valid/);
  });

  it('a missing tensor', async () => {
    const { dir, ckpt } = await copyOf('jamba-demo');
    await rewrite(ckpt, (es) => es.filter((e) => e.name !== 'model.layers.3.mamba.dt_proj.bias'));
    await expectFailure(ckpt, dir, 'MISSING_TENSOR', /model\.layers\.3\.mamba\.dt_proj\.bias/);
  });

  it('a tensor of the wrong shape', async () => {
    const { dir, ckpt } = await copyOf('jamba-demo');
    await rewrite(ckpt, (es) => es.map((e) => (e.name === 'model.layers.0.mamba.x_proj.weight' ? { ...e, shape: [e.shape[1]!, e.shape[0]!] } : e)));
    await expectFailure(ckpt, dir, 'BAD_SHAPE', /model\.layers\.0\.mamba\.x_proj\.weight: shape \[128, 36\], expected \[36, 128\]/);
  });

  it('a wrong-shaped expert', async () => {
    const { dir, ckpt } = await copyOf('jamba-demo');
    await rewrite(ckpt, (es) => es.map((e) => (e.name === 'model.layers.1.feed_forward.experts.5.up_proj.weight' ? { ...e, shape: [e.shape[1]!, e.shape[0]!] } : e)));
    await expectFailure(ckpt, dir, 'BAD_SHAPE', /experts\.5\.up_proj\.weight has shape \[64, 32\], the config implies \[32, 64\]/);
  });

  it('a tensor the config does not account for', async () => {
    const { dir, ckpt } = await copyOf('jamba-demo');
    await rewrite(ckpt, (es) => [...es, { name: 'model.layers.0.mamba.in_proj.bias', dtype: 'F32', shape: [256], data: new Uint8Array(1024) }]);
    await expectFailure(ckpt, dir, 'BAD_CONFIG', /model\.layers\.0\.mamba\.in_proj\.bias/);
  });

  it('an unknown model_type', async () => {
    const { dir, ckpt } = await copyOf('jamba-demo');
    const cfg = JSON.parse(await readFile(join(ckpt, 'config.json'), 'utf-8')) as Record<string, unknown>;
    await writeFile(join(ckpt, 'config.json'), JSON.stringify({ ...cfg, model_type: 'gpt2', architectures: ['GPT2LMHeadModel'] }));
    await expectFailure(ckpt, dir, 'UNSUPPORTED', /model_type "gpt2" is not a supported architecture\. Supported: jamba/);
  });

  it('a config.json that is not JSON', async () => {
    const { dir, ckpt } = await copyOf('jamba-demo');
    await writeFile(join(ckpt, 'config.json'), '{"model_type": "jamba",');
    await expectFailure(ckpt, dir, 'CORRUPT_FILE', /config\.json: not valid JSON/);
  });

  it('a folder without weights', async () => {
    const { dir, ckpt } = await copyOf('jamba-demo');
    await rm(join(ckpt, 'model.safetensors'));
    await expectFailure(ckpt, dir, 'NOT_FOUND', /no weights found/);
  });

  it('a folder without config.json', async () => {
    const { dir, ckpt } = await copyOf('jamba-demo');
    await rm(join(ckpt, 'config.json'));
    await expectFailure(ckpt, dir, 'NOT_FOUND', /no config\.json/);
  });

  it('refuses to write into a non-empty output dir without --overwrite, leaving it untouched', async () => {
    const dir = await tempDir();
    const outDir = join(dir, 'out');
    await mkdir(outDir);
    await writeFile(join(outDir, 'keep.txt'), 'mine');
    const err = await convert(fixture('jamba-demo', 'checkpoint'), { outDir }).catch((e: unknown) => e);
    expect((err as HubmoeError).code).toBe('BAD_ARGUMENT');
    expect(await readdir(outDir)).toEqual(['keep.txt']);
    const res = await convert(fixture('jamba-demo', 'checkpoint'), { outDir, overwrite: true });
    expect(res.files).toContain('onnx/model.onnx');
    expect(await readdir(dir)).toEqual(['out']);
  });
});

describe('convert: the model dir', () => {
  it('has the transformers.js layout, an explicit layers_block_type and a validated hubmoe.json', async () => {
    const dir = await tempDir();
    const outDir = join(dir, 'out');
    const res = await convert(fixture('jamba-demo', 'checkpoint'), { outDir, dtype: 'both' });
    expect(res.files.sort()).toEqual(
      [
        'config.json',
        'generation_config.json',
        'hubmoe.json',
        'onnx/model.onnx',
        'onnx/model.onnx_data',
        'onnx/model_static.onnx',
        'onnx/model_fp16.onnx',
        'onnx/model_fp16.onnx_data',
        'onnx/model_fp16_static.onnx',
        'tokenizer.json',
        'tokenizer_config.json',
      ].sort(),
    );
    const config = JSON.parse(await readFile(join(outDir, 'config.json'), 'utf-8')) as Record<string, unknown>;
    expect(config.layers_block_type).toEqual(res.spec.blocks.map((b) => b.op.kind));
    expect((config.layers_block_type as string[]).slice(6, 10)).toEqual(['mamba', 'moe', 'attention', 'mlp']);
    expect(config['transformers.js_config']).toEqual({ dtype: 'fp32', use_external_data_format: { 'model.onnx': 1, 'model_fp16.onnx': 1 } });
    const spec = JSON.parse(await readFile(join(outDir, 'hubmoe.json'), 'utf-8')) as Record<string, unknown>;
    expect(spec.schema).toBe('hubmoe/1');
    expect(spec.export).toMatchObject({ target: 'portable', dtypes: ['fp32', 'fp16'] });
    expect((spec.source as { files: string[] }).files).toEqual(['model.safetensors']);
  });

  it('aligns every external-data offset to 4096 and halves the bytes in fp16', async () => {
    const dir = await tempDir();
    const outDir = join(dir, 'out');
    await convert(fixture('jamba-odd', 'checkpoint'), { outDir, dtype: 'both' });
    const onnx = await readFile(join(outDir, 'onnx', 'model.onnx'));
    // external_data entries are stored as key/value strings: collect every "offset" value.
    const text = onnx.toString('latin1');
    const offsets = [...text.matchAll(/offset\x12[\x01-\x7f]([0-9]+)/g)].map((m) => Number(m[1]));
    expect(offsets.length).toBeGreaterThan(50);
    expect(offsets.every((o) => o % 4096 === 0)).toBe(true);
    const { stat } = await import('node:fs/promises');
    const f32 = (await stat(join(outDir, 'onnx', 'model.onnx_data'))).size;
    const f16 = (await stat(join(outDir, 'onnx', 'model_fp16.onnx_data'))).size;
    expect(f16).toBeLessThan(f32);
  });

  it('a dry run reports the plan and writes nothing', async () => {
    const dir = await tempDir();
    const res = await convert(fixture('jamba-odd', 'checkpoint'), { outDir: join(dir, 'out'), dryRun: true });
    expect(res.files).toEqual([]);
    expect(res.plan.files.length).toBe(12);
    expect(res.plan.blocks.map((b) => b.kind).slice(0, 4)).toEqual(['mamba', 'moe', 'attention', 'mlp']);
    expect(await readdir(dir)).toEqual([]);
  });
});
