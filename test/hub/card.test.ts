import { describe, expect, it } from 'vitest';
import { CARD_MARKER, blocksSummary, renderModelCard, renderScapSection } from '../../src/hub/card.js';
import { tinySpec } from './spec-fixture.js';
import type { ScapSiteSpec, ScapSpec } from '../../src/schema/spec.js';

function frontMatter(card: string): string[] {
  const lines = card.split('\n');
  expect(lines[0]).toBe('---');
  const end = lines.indexOf('---', 1);
  expect(end).toBeGreaterThan(0);
  return lines.slice(1, end);
}

describe('model card', () => {
  it('writes the YAML metadata the Hub reads', () => {
    const card = renderModelCard(tinySpec(), { repoId: 'me/BlackMamba-tiny-onnx', license: 'apache-2.0' });
    expect(frontMatter(card)).toEqual([
      'license: apache-2.0',
      'base_model: Zyphra/BlackMamba-tiny',
      'library_name: transformers.js',
      'pipeline_tag: text-generation',
      'tags:',
      '- onnx',
      '- transformers.js',
      '- hubmoe',
      '- blackmamba',
      '- mamba',
      '- moe',
    ]);
    const quantized = renderModelCard(tinySpec(), { repoId: 'me/x', baseModelRelation: 'quantized' });
    expect(frontMatter(quantized)).toContain('base_model_relation: quantized');
  });

  it('says what was converted, from which commit, with which dtypes and target, and how to run it', () => {
    const card = renderModelCard(tinySpec(), { repoId: 'me/BlackMamba-tiny-onnx' });
    expect(card).toContain(CARD_MARKER);
    expect(card).toContain('# BlackMamba-tiny-onnx');
    expect(card).toContain('[Zyphra/BlackMamba-tiny](https://huggingface.co/Zyphra/BlackMamba-tiny)');
    expect(card).toContain('commit [`0123456789ab`](https://huggingface.co/Zyphra/BlackMamba-tiny/tree/0123456789abcdef0123456789abcdef01234567)');
    expect(card).toMatch(/a BlackMamba model \([\d.]+K parameters, [\d.]+K active per token\)/);
    expect(card).toContain('| source format | safetensors (bf16), 1 file |');
    expect(card).toContain('2 residual sub-blocks: 1 × mamba (d_state 4, d_conv 4), 1 × moe (4 experts, top-1, softmax router, 12 hidden gelu_erf)');
    expect(card).toContain('`portable`');
    expect(card).toContain('fp32 (`onnx/model.onnx`), fp16 (`onnx/model_fp16.onnx`)');
    expect(card).toContain('npx hubmoe generate BlackMamba-tiny-onnx --prompt');
    expect(card).toContain("import { loadModel } from 'hubmoe';");
    expect(card).toContain("import 'hubmoe/transformers';");
    expect(card).toContain("pipeline('text-generation', 'me/BlackMamba-tiny-onnx', { dtype: 'fp32' })");
    expect(card).not.toContain('SCAP');
  });

  it('is deterministic, and omits base_model for a local source', () => {
    const spec = tinySpec({ source: { path: '/models/x', format: 'pytorch', files: ['pytorch_model.bin'] } });
    const a = renderModelCard(spec, { repoId: 'me/x' });
    expect(renderModelCard(spec, { repoId: 'me/x' })).toBe(a);
    expect(frontMatter(a).some((l) => l.startsWith('base_model'))).toBe(false);
    expect(a).toContain('a local checkpoint (`/models/x`)');
  });

  it('notes the fused target needs hubmoe\'s backend', () => {
    const spec = tinySpec({ export: { target: 'fused', dtypes: ['fp16'], hubmoe_version: '0.1.0' } });
    const card = renderModelCard(spec, { repoId: 'me/x' });
    expect(card).toContain("hubmoe's native backend");
    expect(card).toContain("{ dtype: 'fp16' }");
    // The operators named are those the model's blocks use.
    const kinds = new Set(spec.blocks.map((b) => b.op.kind));
    const named = ['MambaMixer', 'MoE', 'Linear', 'SparseLinear', 'SkipRMSNorm'].filter((op) => card.includes(`${op},`) || card.includes(`${op})`));
    const rms = spec.final_norm.kind === 'rms' || spec.blocks.some((b) => b.norm.kind === 'rms');
    expect(named).toEqual([
      ...(kinds.has('mamba') ? ['MambaMixer'] : []),
      ...(kinds.has('moe') || kinds.has('mlp') ? ['MoE'] : []),
      ...(kinds.has('mamba') || kinds.has('attention') ? ['Linear'] : []),
      ...(rms ? ['SkipRMSNorm'] : []),
    ]);
    expect(rms).toBe(true);
    expect(named.length).toBeGreaterThan(0);
  });

  it('renders a SCAP section from spec.scap (settings, perplexities, a table per layer type), and lets a caller replace it', () => {
    const site = (type: ScapSiteSpec['type'], mode: number, reached: number): ScapSiteSpec => ({ type, target: 0.4, mode, threshold: 0.1, bias: mode ? ['w.scap_bias'] : [], calibration_sparsity: reached, calibration_values: 1000 });
    const scap: ScapSpec = {
      method: 'scap',
      mode_centering: 'auto',
      sparsity: 'all=0.4',
      calibration: { file: 'calib.txt', sha256: 'ab'.repeat(32), tokens: 16384, window: 256 },
      sites: { 'blocks.0.mamba.in_proj': site('mamba_in', 0, 0.4), 'blocks.0.mamba.out_proj': site('mamba_out', -0.02, 0.38), 'blocks.2.mamba.in_proj': site('mamba_in', 0, 0.42) },
      evaluation: { file: 'heldout.txt', sha256: 'cd'.repeat(32), tokens: 4096, dense: 12.3456789, pruned: 12.9 },
    };
    const spec = tinySpec({ scap });
    const card = renderModelCard(spec, { repoId: 'me/x' });
    expect(frontMatter(card)).toEqual(expect.arrayContaining(['- scap', '- activation-sparsity']));
    expect(card).toContain('weights and the file size are unchanged');
    expect(card).toContain('## Pruning (SCAP)');
    expect(card).toContain('| method | SCAP (sequential calibration) |');
    expect(card).toContain('| perplexity | 12.346 dense → 12.900 pruned (4.5 %) on 4096 tokens of `heldout.txt` |');
    expect(card).toContain('| mamba_in | 2 | 40.0 % | 41.0 % | 0 |');
    expect(card).toContain('| mamba_out | 1 | 40.0 % | 38.0 % | 1 |');
    expect(renderScapSection(scap)).toContain('<!-- hubmoe:scap -->');
    const custom = renderModelCard(spec, { repoId: 'me/x', scapSection: '## Pruning\n\ncustom' });
    expect(custom).toContain('custom');
    expect(custom).not.toContain('| method |');
    // With the sparsity measured on the evaluation text, a column for it; local paths shown by name.
    const measured = renderScapSection({ ...scap, calibration: { ...scap.calibration, file: '/home/me/data/calib.txt' }, evaluation: { ...scap.evaluation!, achieved: { mamba_in: 0.395 } } });
    expect(measured).toContain('| layer inputs | sites | target | reached on calibration | reached on evaluation | mode-centered |');
    expect(measured).toContain('| mamba_in | 2 | 40.0 % | 41.0 % | 39.5 % | 0 |');
    expect(measured).toContain('| mamba_out | 1 | 40.0 % | 38.0 % | – | 1 |');
    expect(measured).toContain('tokens of `calib.txt`');
    expect(measured).not.toContain('/home/me');
  });

  it('quotes YAML values that need it', () => {
    const card = renderModelCard(tinySpec(), { repoId: 'me/x', license: 'other: see LICENSE', tags: ['yes', 'a b'] });
    const meta = frontMatter(card);
    expect(meta).toContain('license: "other: see LICENSE"');
    expect(meta).toContain('- "yes"');
    expect(meta).toContain('- "a b"');
  });

  it('summarises blocks in order of first appearance', () => {
    expect(blocksSummary(tinySpec())).toMatch(/^2 residual sub-blocks: 1 × mamba/);
  });
});
