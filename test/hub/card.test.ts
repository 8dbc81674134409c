import { describe, expect, it } from 'vitest';
import { CARD_MARKER, blocksSummary, renderModelCard, renderScapSection } from '../../src/hub/card.js';
import { tinySpec } from './spec-fixture.js';

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
  });

  it('renders a SCAP section generically from spec.scap, and lets the scap module replace it', () => {
    const scap = { threshold_mode: 'mode-centered', sparsity: 0.35, perplexity: { base: 12.3456789, pruned: 12.9 }, layers: [1, 2] };
    const spec = tinySpec({ scap });
    const card = renderModelCard(spec, { repoId: 'me/x' });
    expect(frontMatter(card)).toEqual(expect.arrayContaining(['- scap', '- activation-sparsity']));
    expect(card).toContain('weights and the file size are unchanged');
    expect(card).toContain('## Pruning (SCAP)');
    expect(card).toContain('| sparsity | 0.35 |');
    expect(card).toContain('| perplexity.base | 12.3457 |');
    expect(card).toContain('| layers | `[1,2]` |');
    expect(renderScapSection(scap)).toContain('<!-- hubmoe:scap -->');
    const custom = renderModelCard(spec, { repoId: 'me/x', scapSection: '## Pruning\n\ncustom' });
    expect(custom).toContain('custom');
    expect(custom).not.toContain('| sparsity |');
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
