/**
 * perplexity() through the NLL graph (runtime/nll.ts): the same negative log-likelihoods as a log-sum-exp over the
 * logits forward() returns, on both backends and on the static-cache graph; the scorer alone on logits with
 * padding rows and extreme values; no fallback warning on the way.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { convert } from '../../src/convert.js';
import { Tensor } from '../../runtime/backend.js';
import { loadModel } from '../../runtime/model.js';
import type { HubmoeModel } from '../../runtime/model.js';
import { loadNative } from '../../runtime/native/index.js';
import { NllScorer } from '../../runtime/nll.js';
import { fixture, tempDir } from '../helpers.js';

const skipNative = !loadNative() && !process.env.CI;

/** Σ −log softmax(logits)[target] in double precision, position by position. */
function jsNll(data: Float32Array, V: number, targets: ArrayLike<number>): number {
  let nll = 0;
  for (let i = 0; i < targets.length; i++) {
    const off = i * V;
    let max = -Infinity;
    for (let v = 0; v < V; v++) max = Math.max(max, data[off + v]!);
    let sum = 0;
    for (let v = 0; v < V; v++) sum += Math.exp(data[off + v]! - max);
    nll += Math.log(sum) + max - data[off + targets[i]!]!;
  }
  return nll;
}

describe('perplexity through the NLL graph', () => {
  let dir: string;
  const warnings: string[] = [];
  const onWarning = (w: Error): void => void warnings.push(w.message);
  beforeAll(async () => {
    dir = await tempDir('hubmoe-nll-');
    await convert(fixture('jamba-demo', 'checkpoint'), { outDir: join(dir, 'm') });
    process.on('warning', onWarning);
  });
  afterAll(() => void process.off('warning', onWarning));

  const ids = Array.from({ length: 3 * 12 + 1 }, (_, i) => (i * 37 + 11) % 250);

  for (const opts of [{ backend: 'onnxruntime-node' as const }, { backend: 'native' as const }, { backend: 'native' as const, staticCache: true }]) {
    it.skipIf(opts.backend === 'native' && skipNative)(`${JSON.stringify(opts)}: equals a log-sum-exp over forward()'s logits`, async () => {
      const model: HubmoeModel = await loadModel(join(dir, 'm'), { threads: 1, ...opts });
      try {
        const W = 12;
        const rows = [0, 1, 2].map((w) => ids.slice(w * W, (w + 1) * W));
        const { data } = await model.forward(rows);
        const targets = rows.flatMap((_, w) => ids.slice(w * W + 1, (w + 1) * W + 1));
        const want = jsNll(data, model.spec.vocab.padded_size, targets) / targets.length;
        const got = await model.perplexity(ids, { window: W, batch: 2 });
        expect(got.tokens).toBe(36);
        expect(Math.abs(got.nll / want - 1)).toBeLessThan(1e-6);
        expect(Math.abs(got.perplexity / Math.exp(want) - 1)).toBeLessThan(1e-6);
        expect(warnings.filter((w) => w.includes('perplexity falls back'))).toEqual([]);
      } finally {
        await model.dispose();
      }
    });
  }

  it('HUBMOE_NLL=js takes the JavaScript path, with the same result', async () => {
    const model = await loadModel(join(dir, 'm'), { threads: 1 });
    const viaGraph = await model.perplexity(ids, { window: 12 });
    await model.dispose();
    process.env.HUBMOE_NLL = 'js';
    try {
      const js = await loadModel(join(dir, 'm'), { threads: 1 });
      const viaJs = await js.perplexity(ids, { window: 12 });
      await js.dispose();
      expect(viaJs.nll).not.toBe(viaGraph.nll); // float32 in ONNX Runtime, double here: not bit-identical
      expect(Math.abs(viaJs.nll / viaGraph.nll - 1)).toBeLessThan(1e-6);
    } finally {
      delete process.env.HUBMOE_NLL;
    }
  });

  it('scores host logits with padding rows and extreme values as the definition does', async () => {
    const scorer = await NllScorer.create({ device: 'cpu', backend: 'onnxruntime-node', threads: 1 });
    try {
      const B = 2;
      const T = 3;
      const V = 7;
      const data = Float32Array.from({ length: B * T * V }, (_, i) => Math.sin(i * 1.7) * 30);
      data[5] = 80; // one dominant logit
      data[V + 2] = -1e30; // one vanishing one (the target below)
      const targets = [1, 2, 6, 0, 3, 4];
      const got = await scorer.sum(new Tensor('float32', data, [B, T, V]), BigInt64Array.from(targets, BigInt), B, T);
      const want = jsNll(data, V, targets);
      expect(Math.abs(got / want - 1)).toBeLessThan(1e-6);
    } finally {
      await scorer.release();
    }
  });
});
