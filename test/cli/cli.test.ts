/** The CLI as users run it: `node bin/hubmoe.js …` (the compiled dist/, built by `npm test`). */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT, fixture, tempDir } from '../helpers.js';

function hubmoe(args: string[], env: Record<string, string> = {}): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [join(ROOT, 'bin', 'hubmoe.js'), ...args], { encoding: 'utf-8', env: { ...process.env, ...env, NO_COLOR: '1' } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('hubmoe CLI', () => {
  it('is built', () => {
    expect(existsSync(join(ROOT, 'dist', 'src', 'cli', 'main.js'))).toBe(true);
  });

  it('convert prints only the output path on stdout, progress on stderr', async () => {
    const out = join(await tempDir(), 'model');
    const r = hubmoe(['convert', fixture('jamba-odd', 'checkpoint'), '--out', out]);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`${out}\n`);
    expect(r.stderr).toMatch(/wrote onnx\/model\.onnx/);
    const g = hubmoe(['generate', out, '--prompt', 'x', '--max-new-tokens', '3']);
    // jamba-odd has no tokenizer.
    expect(g.code).toBe(1);
    expect(g.stderr).toMatch(/no tokenizer\.json/);
  });

  it('convert --dry-run --json prints the plan as JSON and writes nothing', async () => {
    const dir = await tempDir();
    const r = hubmoe(['convert', fixture('jamba-odd', 'checkpoint'), '--out', join(dir, 'm'), '--dry-run', '--json']);
    expect(r.code).toBe(0);
    const plan = JSON.parse(r.stdout).plan;
    expect(plan.family).toBe('jamba');
    expect(plan.files).toHaveLength(12);
    expect(existsSync(join(dir, 'm'))).toBe(false);
  });

  it('inspect shows the family, parameter count and block table', () => {
    const r = hubmoe(['inspect', fixture('jamba-demo', 'checkpoint')]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/family\s+jamba/);
    expect(r.stdout).toMatch(/parameters\s+[\d.]+[KM] \([\d.]+[KM] active per token\)/);
    expect(r.stdout).toMatch(/\n\s+8\s+4\s+attention\s+4 heads, 2 KV heads, head_dim 16/);
    expect(r.stdout).toMatch(/\n\s+3\s+1\s+moe\s+8 experts × 32, top-2 softmax/);
    const j = hubmoe(['inspect', fixture('jamba-demo', 'checkpoint'), '--json']);
    expect(JSON.parse(j.stdout).spec.blocks).toHaveLength(16);
  });

  it('generate streams text to stdout and --json wraps it', async () => {
    const out = join(await tempDir(), 'model');
    expect(hubmoe(['convert', fixture('jamba-demo', 'checkpoint'), '--out', out]).code).toBe(0);
    const r = hubmoe(['generate', out, '--prompt', 'The jury', '--max-new-tokens', '5', '--json']);
    expect(r.code).toBe(0);
    const res = JSON.parse(r.stdout);
    expect(res.prompt).toBe('The jury');
    expect(typeof res.text).toBe('string');
    const plain = hubmoe(['generate', out, '--prompt', 'The jury', '--max-new-tokens', '5']);
    expect(plain.stdout).toBe(`${res.text}\n`);
    // The static-cache graph generates the same text; --graph takes only its choices.
    const fixed = hubmoe(['generate', out, '--prompt', 'The jury', '--max-new-tokens', '5', '--graph', 'static']);
    expect(fixed.code).toBe(0);
    expect(fixed.stdout).toBe(plain.stdout);
    const bad = hubmoe(['generate', out, '--prompt', 'The jury', '--graph', 'fast']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/graph/);
    const cpuGraph = hubmoe(['generate', out, '--prompt', 'The jury', '--graph', 'cuda-graph']);
    expect(cpuGraph.code).toBe(1);
    expect(cpuGraph.stderr).toMatch(/cudaGraph needs device 'cuda'/);
  });

  it('eval --ppl prints the perplexity of a text file, as model.perplexity computes it', async () => {
    const dir = await tempDir();
    const out = join(dir, 'model');
    expect(hubmoe(['convert', fixture('jamba-demo', 'checkpoint'), '--out', out]).code).toBe(0);
    const { writeFile } = await import('node:fs/promises');
    const text = 'The jury said it did find that the city was well run.\nIt was a fine day in Atlanta, and the election was over.\n'.repeat(6);
    await writeFile(join(dir, 'text.txt'), text);
    const r = hubmoe(['eval', out, '--ppl', join(dir, 'text.txt'), '--window', '16', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const res = JSON.parse(r.stdout);
    const { loadModel } = await import('../../runtime/model.js');
    const { encodeCorpus } = await import('../../runtime/tokenizer.js');
    const model = await loadModel(out, { threads: 1 });
    const want = await model.perplexity(encodeCorpus(model.tokenizer!, text), { window: 16 });
    await model.dispose();
    expect(res.tokens).toBe(want.tokens);
    expect(Math.abs(res.perplexity / want.perplexity - 1)).toBeLessThan(1e-6);
    expect(hubmoe(['eval', out, '--ppl', join(dir, 'missing.txt')]).stderr).toMatch(/missing\.txt: no such file/);
  });

  it('prune writes a pruned model dir and reports target and achieved sparsity; eval reports it too', async () => {
    const dir = await tempDir();
    const dense = join(dir, 'dense');
    expect(hubmoe(['convert', fixture('brown', 'jamba', 'checkpoint'), '--out', dense]).code).toBe(0);
    const { writeFile } = await import('node:fs/promises');
    const text = 'The jury said it did find that the city was well run.\nIt was a fine day in Atlanta, and the election was over.\n'.repeat(40);
    await writeFile(join(dir, 'text.txt'), text);
    const pruned = join(dir, 'pruned');
    const args = ['prune', dense, '--out', pruned, '--calib', join(dir, 'text.txt'), '--calib-tokens', '512', '--window', '128', '--sparsity', 'all=0.3,mamba_out=0.5', '--ppl', join(dir, 'text.txt')];
    const r = hubmoe(args);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe(`${pruned}\n`);
    expect(r.stderr).toMatch(/calibration: 512 tokens of .* in 4 windows of 128/);
    expect(r.stderr).toMatch(/\nmamba_out\s+3\s+50\.0 %\s+50\.\d %\s+\d+\.\d %/);
    expect(r.stderr).toMatch(/perplexity on .*text\.txt \(\d+ tokens\): dense [\d.]+, pruned [\d.]+/);
    // The out dir exists now: refused without --overwrite, and left as it was.
    const again = hubmoe(args);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/--overwrite/);
    const e = hubmoe(['eval', pruned, '--ppl', join(dir, 'text.txt'), '--window', '128', '--json']);
    expect(e.code, e.stderr).toBe(0);
    const res = JSON.parse(e.stdout);
    const types = Object.fromEntries(res.sparsity.map((t: { type: string; achieved: number }) => [t.type, t.achieved]));
    const { loadSpec } = await import('../../src/schema/load.js');
    const evaluation = (await loadSpec(pruned)).scap!.evaluation!;
    expect(res.perplexity).toBeCloseTo(evaluation.pruned, 6);
    expect(types).toEqual(evaluation.achieved);
    expect(res.sites).toHaveLength(28);
    expect(res.sites[1]).toMatchObject({ site: 'blocks.0.mamba.out_proj', type: 'mamba_out', target: 0.5 });
    const plain = hubmoe(['eval', pruned, '--ppl', join(dir, 'text.txt'), '--window', '128', '--sites']);
    expect(plain.stdout).toMatch(/layer type\s+sites\s+target\s+achieved\n/);
    expect(plain.stdout).toMatch(/\nblocks\.0\.mamba\.out_proj\s+50\.0 %\s+\d+\.\d %\n/);
    expect(hubmoe(['prune', dense, '--out', join(dir, 'x'), '--calib', join(dir, 'text.txt'), '--sparsity', 'up=0.2']).stderr).toMatch(/unknown layer type "up"/);
    // --target fused: the same perplexity on the fused operators, which do not count what they prune.
    const fused = join(dir, 'fused');
    const f = hubmoe(['prune', dense, '--out', fused, '--calib', join(dir, 'text.txt'), '--calib-tokens', '512', '--window', '128', '--sparsity', 'all=0.3,mamba_out=0.5', '--target', 'fused', '--ppl', join(dir, 'text.txt')]);
    expect(f.code, f.stderr).toBe(0);
    const fe = hubmoe(['eval', fused, '--ppl', join(dir, 'text.txt'), '--window', '128']);
    expect(fe.code, fe.stderr).toBe(0);
    // This text repeats two lines, so many calibration values are equal and thresholds sit exactly on
    // some of them; 1-ulp differences between the fused and the portable kernels then flip those inputs
    // (with the thresholds moved off the ties the two agree to 3e-7): a looser bar than prune.test.ts's.
    const fusedEvaluation = (await loadSpec(fused)).scap!.evaluation!;
    expect(Math.abs(Number(/perplexity ([\d.]+)/.exec(fe.stdout)![1]) / fusedEvaluation.pruned - 1)).toBeLessThan(2e-3);
    expect(fe.stdout).toMatch(/achieved sparsity: not counted by the fused target's operators/);
  });

  it('demo converts the bundled model and generates', () => {
    const r = hubmoe(['demo', '--max-new-tokens', '4']);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/converting the bundled tiny Jamba checkpoint/);
    expect(r.stdout.length).toBeGreaterThan(0);
  });

  it('doctor reports every component with a fix for what is missing', () => {
    const r = hubmoe(['doctor', '--json']);
    expect(r.code).toBe(0);
    const report = JSON.parse(r.stdout);
    expect(report.checks.map((c: { name: string }) => c.name)).toEqual([
      'onnxruntime-node',
      'CUDA execution provider',
      'native addon',
      'custom-op library (CPU)',
      'custom-op library (CUDA)',
      'GPU',
    ]);
    expect(report.checks[0].ok).toBe(true);
    expect(report.capabilities.portableCpu).toBe(true);
    for (const c of report.checks) if (!c.ok) expect(c.fix).toMatch(/\w/);
    const text = hubmoe(['doctor']);
    expect(text.stdout).toMatch(/portable target on CPU:\s+yes/);
  });

  it('exits 2 on a usage error and 1 on a HubmoeError, with a message on stderr only', () => {
    const usage = hubmoe(['convert']);
    expect(usage.code).toBe(2);
    expect(usage.stdout).toBe('');
    expect(usage.stderr).toMatch(/Not enough non-option arguments|Missing required argument/);
    const bad = hubmoe(['convert', '/nonexistent/dir', '--out', '/tmp/x']);
    expect(bad.code).toBe(1);
    expect(bad.stdout).toBe('');
    expect(bad.stderr).toMatch(/hubmoe: error: \/nonexistent\/dir/);
    expect(hubmoe(['frobnicate']).code).toBe(2);
  });
});
