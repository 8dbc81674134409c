/**
 * The fused target's graph structure: where it uses the fewer, larger nodes that make a decode step cheaper on the
 * GPU (ai.hubmoe SkipRMSNorm, MambaMixer and StaticAttentionMask), and that the portable
 * target keeps to ONNX Runtime's built-in ops. The numbers these graphs compute are checked against the references
 * by the parity suite (test/parity) and the static-cache tests (test/runtime/static.test.ts).
 */
import { describe, expect, it } from 'vitest';
import { openSource } from '../../src/convert.js';
import { buildGraph } from '../../src/onnx/build.js';
import type { BuildOptions } from '../../src/onnx/build.js';
import { HUBMOE_DOMAIN } from '../../src/onnx/graph.js';
import type { ModelSpec } from '../../src/schema/spec.js';
import { fixture } from '../helpers.js';

interface Built {
  spec: ModelSpec;
  count: (opType: string) => number;
  nodes: ReturnType<typeof buildGraph>['nodes'];
  outputs: string[];
}

async function build(name: string, opts: BuildOptions): Promise<Built> {
  const opened = await openSource(fixture(name, 'checkpoint'));
  try {
    const g = buildGraph(opened.spec, opened.tensors, opts);
    const model = g.graph('m', []);
    return {
      spec: opened.spec,
      nodes: g.nodes,
      count: (opType) => g.nodes.filter((n) => n.opType === opType).length,
      outputs: model.outputs.map((o) => o.name),
    };
  } finally {
    await opened.close();
  }
}

const kinds = (spec: ModelSpec, kind: string): number => spec.blocks.filter((b) => b.op.kind === kind).length;

describe('the fused target', () => {
  for (const name of ['jamba-demo', 'blackmamba-plain', 'mamba-hf']) {
    it(`${name}: each residual add and the next norm are one ai.hubmoe SkipRMSNorm; the portable graph keeps Add and norm`, async () => {
      const fused = await build(name, { dtype: 'fp32', target: 'fused', staticCache: true });
      // Blocks 1…n-1 and the final norm read the previous block's output through the fused node where they are
      // RMSNorms (BlackMamba's final norm is a LayerNorm: Add and LayerNormalization); block 0 norms the embedding
      // with a SkipRMSNorm without skip.
      const rms = fused.spec.blocks.slice(1).filter((b) => b.norm.kind === 'rms').length + (fused.spec.final_norm.kind === 'rms' ? 1 : 0);
      expect(rms).toBeGreaterThan(1);
      expect(fused.spec.blocks.every((b) => b.norm.kind === 'rms')).toBe(true);
      const norms = fused.nodes.filter((x) => x.opType === 'SkipRMSNorm');
      expect(norms.length).toBe(rms + 1);
      expect(fused.count('LayerNormalization')).toBe(fused.spec.final_norm.kind === 'layer' ? 1 : 0);
      for (const op of ['SkipSimplifiedLayerNormalization', 'SimplifiedLayerNormalization']) expect(fused.count(op)).toBe(0);
      const eps = (j: number): number => (j < fused.spec.blocks.length ? fused.spec.blocks[j]! : { norm: fused.spec.final_norm }).norm.eps;
      norms.forEach((n, j) => {
        expect(n.domain).toBe(HUBMOE_DOMAIN);
        expect(n.inputs[2]).toBe(j < fused.spec.blocks.length ? `blocks.${j}.norm.weight` : 'final_norm.weight');
        expect((n.attributes.find((a) => a.name === 'epsilon')?.value as { float: number }).float).toBeCloseTo(eps(j), 12);
        if (j === 0) {
          // The embedding's norm: no skip, no sum.
          expect(n.inputs[1]).toBe('');
          expect(n.outputs.length).toBe(1);
        } else {
          // x + skip is the residual stream: the next fused norm adds the next block's output to it.
          expect(n.inputs[1]).not.toBe('');
          expect(n.outputs.length).toBe(2);
          if (j < norms.length - 1) expect(norms[j + 1]!.inputs).toContain(n.outputs[1]);
        }
      });
      // Each Mamba mixer between in_proj and out_proj is one ai.hubmoe MambaMixer (conv and scan states in, out).
      const mixers = fused.nodes.filter((n) => n.opType === 'MambaMixer');
      expect(mixers.length).toBe(kinds(fused.spec, 'mamba'));
      for (const n of mixers) {
        expect(n.domain).toBe(HUBMOE_DOMAIN);
        expect(n.inputs[4]).toMatch(/^past_conv\.\d+$/);
        expect(n.inputs[10]).toMatch(/^past_ssm\.\d+$/);
        expect(n.outputs.length).toBe(3);
      }
      for (const part of ['MambaConv', 'SelectiveScan', 'SplitRMSNorm', 'CausalConvWithState', 'LinearAttention']) expect(fused.count(part)).toBe(0);
      const portable = await build(name, { dtype: 'fp32', target: 'portable', staticCache: true });
      expect(portable.count('CausalConvWithState')).toBe(kinds(portable.spec, 'mamba'));
      expect(portable.count('SkipSimplifiedLayerNormalization')).toBe(0);
      expect(portable.count('SkipRMSNorm')).toBe(0);
      expect(portable.count('SplitRMSNorm')).toBe(0);
      expect(portable.count('StaticAttentionMask')).toBe(0);
      expect(portable.nodes.every((n) => n.domain !== HUBMOE_DOMAIN)).toBe(true);
    });
  }

  it("jamba: the dt/B/C norms are MambaMixer's last three inputs, the static step's mask one StaticAttentionMask", async () => {
    const fused = await build('jamba-demo', { dtype: 'fp16', target: 'fused', staticCache: true });
    const mamba = kinds(fused.spec, 'mamba');
    expect(mamba).toBeGreaterThan(0);
    expect(kinds(fused.spec, 'attention')).toBeGreaterThan(0);
    const mixers = fused.nodes.filter((n) => n.opType === 'MambaMixer');
    expect(mixers.length).toBe(mamba);
    for (const n of mixers) {
      expect(n.inputs.slice(11).map((i) => i.replace(/^blocks\.\d+\.mamba\./, ''))).toEqual(['dt_norm.weight', 'b_norm.weight', 'c_norm.weight']);
      const eps = n.attributes.find((a) => a.name === 'epsilon');
      expect((eps?.value as { float: number }).float).toBeCloseTo((fused.spec.blocks.find((b) => b.op.kind === 'mamba')!.op as { eps: number }).eps, 12);
    }
    // Only the first block's norm has no skip; the inner norms are inside MambaMixer.
    expect(fused.count('SimplifiedLayerNormalization')).toBe(0);
    expect(fused.nodes.filter((n) => n.opType === 'SkipRMSNorm' && n.inputs[1] === '').length).toBe(1);
    const masks = fused.nodes.filter((n) => n.opType === 'StaticAttentionMask');
    expect(masks.length).toBe(1);
    expect(masks[0]!.domain).toBe(HUBMOE_DOMAIN);
    expect(masks[0]!.inputs).toEqual(['attention_mask', 'cache_position']);
    // Its slots feed the KV writes (the Where nodes), and the elementwise mask arithmetic is gone.
    const [, isNew, source] = masks[0]!.outputs;
    expect(fused.nodes.filter((n) => n.opType === 'Where' && n.inputs[0] === isNew).length).toBe(2 * kinds(fused.spec, 'attention'));
    expect(fused.nodes.some((n) => n.inputs.includes(source!))).toBe(true);
    expect(fused.count('CumSum')).toBe(0);
    // The dynamic graph has no cache_position: its bias stays in plain ops.
    const dynamic = await build('jamba-demo', { dtype: 'fp16', target: 'fused' });
    expect(dynamic.count('StaticAttentionMask')).toBe(0);
    expect(dynamic.count('MambaMixer')).toBe(mamba);
  });

  it('jamba: each dense MLP is one ai.hubmoe MoE with routing "none"; the output projections are ai.hubmoe Linear', async () => {
    const fused = await build('jamba-demo', { dtype: 'fp16', target: 'fused', staticCache: true });
    const mlps = fused.spec.blocks.filter((b) => b.op.kind === 'mlp');
    const moes = fused.spec.blocks.filter((b) => b.op.kind === 'moe');
    expect(mlps.length).toBeGreaterThan(0);
    const dense = fused.nodes.filter((n) => n.opType === 'MoE' && n.attributes.some((a) => a.name === 'routing' && a.value === 'none'));
    expect(dense.length).toBe(mlps.length);
    expect(fused.count('MoE')).toBe(mlps.length + moes.length);
    for (const n of dense) {
      expect(n.domain).toBe(HUBMOE_DOMAIN);
      expect(n.inputs[1]).toBe('');
      expect(n.inputs[2]).toMatch(/^blocks\.\d+\.mlp\.fc1\.weight$/);
      expect(n.inputs[4]).toMatch(/^blocks\.\d+\.mlp\.fc2\.weight$/);
      expect(n.attributes.find((a) => a.name === 'k')?.value).toBe(1);
      expect(n.attributes.find((a) => a.name === 'glu')?.value).toBe(1);
    }
    // The MatMuls left are the Mamba in_proj and the LM head: none reads an MLP weight.
    expect(fused.nodes.some((n) => n.opType === 'MatMul' && n.inputs.some((i) => /\.mlp\./.test(i)))).toBe(false);
    const portable = await build('jamba-demo', { dtype: 'fp16', target: 'portable', staticCache: true });
    expect(portable.nodes.filter((n) => n.opType === 'MatMul' && n.inputs.some((i) => /\.mlp\./.test(i))).length).toBe(3 * mlps.length);
    // Each Mamba out_proj, the attention projections and the MoE routers are ai.hubmoe Linear with the checkpoint's
    // [out, in] weight (in_proj stays a MatMul: at 16 tokens cuBLAS reads its transposed weight faster); the portable
    // graph keeps MatMul.
    const linears = fused.nodes.filter((n) => n.opType === 'Linear');
    expect(linears.length).toBe(kinds(fused.spec, 'mamba') + 4 * kinds(fused.spec, 'attention') + moes.length);
    for (const n of linears) {
      expect(n.domain).toBe(HUBMOE_DOMAIN);
      expect(n.inputs[1]).toMatch(/^blocks\.\d+\.(mamba\.out_proj|attn\.[qkvo]|moe\.router)\.weight$/);
    }
    // Each MoE op reads its router's Linear output as its logits.
    for (const n of fused.nodes.filter((m) => m.opType === 'MoE' && m.inputs[1])) {
      const producer = fused.nodes.find((m) => m.outputs.includes(n.inputs[1]!));
      expect(producer?.opType).toBe('Linear');
      expect(producer?.inputs[1]).toMatch(/^blocks\.\d+\.moe\.router\.weight$/);
    }
    expect(portable.count('Linear')).toBe(0);
  });

  it('jamba: a SCAP-pruned MLP or out_proj keeps SparseLinear; the unpruned ones stay MoE "none" and Linear', async () => {
    const plain = await build('jamba-demo', { dtype: 'fp32', target: 'fused' });
    const jm = plain.spec.blocks.findIndex((b) => b.op.kind === 'mlp');
    const jb = plain.spec.blocks.findIndex((b) => b.op.kind === 'mamba');
    const sites = Object.fromEntries(
      [`blocks.${jm}.mlp.up`, `blocks.${jm}.mlp.down`, `blocks.${jb}.mamba.out_proj`].map((site) => [site, { mode: 0, threshold: 0.1 }]),
    );
    const pruned = await build('jamba-demo', { dtype: 'fp32', target: 'fused', scap: { kind: 'pruned', sites, registered: [] } });
    const dense = (g: Built): number => g.nodes.filter((n) => n.opType === 'MoE' && n.attributes.some((a) => a.name === 'routing' && a.value === 'none')).length;
    // The pruned MLP's gate, up and down, and the pruned out_proj.
    expect(pruned.count('SparseLinear')).toBe(4);
    expect(pruned.nodes.filter((n) => n.opType === 'SparseLinear').every((n) => n.domain === HUBMOE_DOMAIN)).toBe(true);
    expect(dense(pruned)).toBe(dense(plain) - 1);
    expect(pruned.count('Linear')).toBe(plain.count('Linear') - 1);
    expect(pruned.nodes.some((n) => n.opType === 'Linear' && n.inputs[1] === `blocks.${jb}.mamba.out_proj.weight`)).toBe(false);
    expect(pruned.nodes.some((n) => n.opType === 'MoE' && n.inputs[2] === `blocks.${jm}.mlp.fc1.weight`)).toBe(false);
  });

  it('a block range ends with the residual add of its last block (hidden_out)', async () => {
    const g = await build('jamba-demo', { dtype: 'fp32', target: 'fused', range: { from: 0, to: 2 } });
    expect(g.outputs).toContain('hidden_out');
    expect(g.outputs).not.toContain('logits');
    // Block 0's norm has no skip, block 1's is the fused add and norm; block 1's output is added to the stream at the end.
    expect(g.count('SkipRMSNorm')).toBe(2);
    expect(g.nodes.filter((n) => n.opType === 'SkipRMSNorm' && n.inputs[1] !== '').length).toBe(1);
    const last = g.nodes.find((n) => n.outputs.includes('hidden_out')) ?? g.nodes[g.nodes.length - 1]!;
    expect(['Add', 'Identity']).toContain(last.opType);
  });
});
