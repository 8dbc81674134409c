/**
 * The parity suite every fixture goes through: convert the fixture's checkpoint, then compare
 * hubmoe's logits, greedy tokens and cached decode with what the family's reference implementation
 * recorded (fixtures/<name>/reference.safetensors), at the bar DESIGN.md sets:
 * max |logits − reference| ≤ 1e-4 × max |reference|.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { convert } from '../../src/convert.js';
import type { ConvertOptions } from '../../src/convert.js';
import { loadModel } from '../../runtime/model.js';
import type { HubmoeModel, LoadOptions } from '../../runtime/model.js';
import { PARITY, Reference, fixture, relError, tempDir } from '../helpers.js';

export interface ParityCase {
  /** Fixture whose checkpoint/ is converted. */
  name: string;
  /** Fixture holding the reference (default: the same). */
  reference?: string;
  convert?: Partial<ConvertOptions>;
  /**
   * How the reference's padded batch relates to hubmoe's: 'reference' compares padded logits with
   * the reference's padded run; 'alone' compares the padded row with the reference's row run alone.
   */
  padded?: 'reference' | 'alone';
  /** How to load the converted model (default: CPU, onnxruntime-node). */
  load?: LoadOptions;
  /** Suffix of the test title (to tell variants apart). */
  variant?: string;
}

export function parityCase(c: ParityCase): void {
  describe(`parity: ${c.name}${c.variant ? ` (${c.variant})` : ''}`, () => {
    let model: HubmoeModel;
    let ref: Reference;

    beforeAll(async () => {
      const dir = await tempDir();
      const outDir = join(dir, 'model');
      await convert(fixture(c.name, 'checkpoint'), { outDir, ...c.convert });
      model = await loadModel(outDir, { threads: 1, ...c.load });
      ref = await Reference.open(c.reference ?? c.name);
    });
    afterAll(async () => {
      await model?.dispose();
      await ref?.close();
    });

    if (c.load?.backend) {
      it(`runs on the ${c.load.backend} backend`, () => {
        expect(model.backendName).toBe(c.load!.backend);
      });
    }

    it('logits of a batch equal the reference', async () => {
      const ids = await ref.rows('input_ids');
      const want = await ref.floats('logits');
      const got = await model.forward(ids);
      expect(got.dims).toEqual(want.shape);
      expect(relError(got.data, want.data)).toBeLessThanOrEqual(PARITY);
    });

    it('greedy decoding with caches gives the reference tokens and step logits', async () => {
      const prompt = await ref.rows('greedy_prompt');
      const want = (await ref.rows('greedy_tokens'))[0]!;
      const wantLogits = await ref.floats('greedy_step_logits');
      const res = await model.generate(prompt, { maxNewTokens: want.length, ignoreEos: true, outputLogits: true });
      expect(res.tokens[0]).toEqual(want);
      const V = wantLogits.shape[1]!;
      const stepLogits = new Float32Array(want.length * V);
      res.logits!.forEach((l, i) => stepLogits.set(l, i * V));
      expect(relError(stepLogits, wantLogits.data)).toBeLessThanOrEqual(PARITY);
    });

    it('cached decode equals a full recompute', async () => {
      const prompt = (await ref.rows('greedy_prompt'))[0]!;
      const res = await model.generate([prompt], { maxNewTokens: 8, ignoreEos: true, outputLogits: true });
      const full = await model.forward([[...prompt, ...res.tokens[0]!]]);
      const V = full.dims[2];
      for (let s = 0; s < res.tokens[0]!.length; s++) {
        const pos = prompt.length - 1 + s;
        const recomputed = full.data.subarray(pos * V, (pos + 1) * V);
        expect(relError(res.logits![s]!, recomputed)).toBeLessThanOrEqual(PARITY);
      }
      // The reference's own recompute of its greedy sequence, for the same check on its side.
      const wantRecompute = await ref.floats('greedy_recompute_logits');
      const ours = new Float32Array(res.logits!.length * V);
      res.logits!.forEach((l, i) => ours.set(l, i * V));
      expect(relError(ours, wantRecompute.data)).toBeLessThanOrEqual(PARITY);
    });

    it('a padded batch equals its rows run alone', async () => {
      const ids = await ref.rows('input_ids');
      const short = ids[1]!.slice(0, 6);
      const batch = await model.forward([ids[0]!, short]);
      const [, T, V] = batch.dims;
      const alone0 = await model.forward([ids[0]!]);
      const alone1 = await model.forward([short]);
      expect(relError(batch.data.subarray(0, T * V), alone0.data)).toBeLessThanOrEqual(PARITY);
      expect(relError(batch.data.subarray((2 * T - short.length) * V, 2 * T * V), alone1.data)).toBeLessThanOrEqual(PARITY);
      if (c.padded && ref.has('padded_logits')) {
        const pmask = await ref.rows('padded_attention_mask');
        const pids = await ref.rows('padded_input_ids');
        const padded = await model.forward(pids, { attentionMask: pmask });
        const want = await ref.floats('padded_logits');
        // Compare the real (unmasked) positions only; padded positions' outputs are undefined.
        const mask = pmask.flat();
        const gotReal: number[] = [];
        const wantReal: number[] = [];
        mask.forEach((m, i) => {
          if (m) {
            gotReal.push(...padded.data.subarray(i * V, (i + 1) * V));
            wantReal.push(...want.data.subarray(i * V, (i + 1) * V));
          }
        });
        if (c.padded === 'reference') expect(relError(gotReal, wantReal)).toBeLessThanOrEqual(PARITY);
        const alone = await ref.floats('short_row_logits');
        const row1 = padded.data.subarray((2 * T - short.length) * V, 2 * T * V);
        expect(relError(row1, alone.data)).toBeLessThanOrEqual(PARITY);
      }
    });

    it('a batch generates what each row generates alone', async () => {
      const ids = await ref.rows('input_ids');
      const prompts = [ids[0]!.slice(0, 7), ids[1]!.slice(0, 4)];
      const both = await model.generate(prompts, { maxNewTokens: 5, ignoreEos: true });
      const first = await model.generate([prompts[0]!], { maxNewTokens: 5, ignoreEos: true });
      const second = await model.generate([prompts[1]!], { maxNewTokens: 5, ignoreEos: true });
      expect(both.tokens).toEqual([first.tokens[0], second.tokens[0]]);
    });
  });
}
