import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { convert } from '../../src/convert.js';
import { HubmoeError } from '../../src/errors.js';
import { loadModel } from '../../runtime/model.js';
import type { HubmoeModel } from '../../runtime/model.js';
import { fixture, tempDir } from '../helpers.js';

describe('generation', () => {
  let model: HubmoeModel;
  beforeAll(async () => {
    const dir = await tempDir();
    await convert(fixture('jamba-demo', 'checkpoint'), { outDir: join(dir, 'm') });
    model = await loadModel(join(dir, 'm'), { threads: 1 });
  });
  afterAll(async () => model?.dispose());

  it('streams tokens as they come, in order', async () => {
    const seen: number[] = [];
    const res = await model.generate([[1, 50, 60]], { maxNewTokens: 6, ignoreEos: true, onToken: (e) => void seen.push(e.token) });
    expect(seen).toEqual(res.tokens[0]);
    expect(res.finishReasons).toEqual(['length']);
  });

  it('stops at eos and at a stop sequence', async () => {
    const free = await model.generate([[1, 50, 60]], { maxNewTokens: 6, ignoreEos: true });
    const [t0, t1, t2] = free.tokens[0]!;
    const eos = await model.generate([[1, 50, 60]], { maxNewTokens: 6, eosTokenIds: [t1!] });
    expect(eos.tokens[0]).toEqual([t0, t1]);
    expect(eos.finishReasons).toEqual(['eos']);
    const stop = await model.generate([[1, 50, 60]], { maxNewTokens: 6, ignoreEos: true, stopSequences: [[t1!, t2!]] });
    expect(stop.tokens[0]).toEqual([t0, t1, t2]);
    expect(stop.finishReasons).toEqual(['stop']);
  });

  it('samples reproducibly with a seed, and differently with another', async () => {
    const opts = { maxNewTokens: 12, ignoreEos: true, temperature: 1.5, topK: 50, topP: 0.95, repetitionPenalty: 1.2 };
    const a = await model.generate([[1, 50, 60]], { ...opts, seed: 1 });
    const b = await model.generate([[1, 50, 60]], { ...opts, seed: 1 });
    const c = await model.generate([[1, 50, 60]], { ...opts, seed: 2 });
    expect(a.tokens).toEqual(b.tokens);
    expect(c.tokens).not.toEqual(a.tokens);
  });

  it('generates text, streaming the pieces that make up the result', async () => {
    const pieces: string[] = [];
    const [text] = await model.generateText('The jury said', { maxNewTokens: 10, ignoreEos: true, onText: (_r, p) => void pieces.push(p) });
    expect(pieces.join('')).toBe(text);
    const ids = model.tokenizer!.encode('The jury said');
    const tokens = await model.generate([ids], { maxNewTokens: 10, ignoreEos: true });
    expect(text).toBe(model.tokenizer!.decode(tokens.tokens[0]!));
  });

  it('cuts the text at a stop string', async () => {
    const [full] = await model.generateText('The jury said', { maxNewTokens: 12, ignoreEos: true });
    const stop = full!.slice(3, 5);
    const [cut] = await model.generateText('The jury said', { maxNewTokens: 12, ignoreEos: true, stop: [stop] });
    expect(cut).toBe(full!.slice(0, full!.indexOf(stop)));
  });

  it.each([
    [[[1, 512]], /token 512 at row 0, position 1 is not a valid id/],
    [[[1, -3]], /token -3/],
    [[[1, 2.5]], /token 2.5/],
    [[[]], /row 0 is empty/],
  ])('rejects bad token ids %j', async (ids, pattern) => {
    const err = await model.forward(ids as number[][]).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(HubmoeError);
    expect((err as HubmoeError).message).toMatch(pattern);
  });

  it('explains a missing model dir and an fp16 model on CPU', async () => {
    const missing = await loadModel('/nonexistent/model').catch((e: unknown) => e);
    expect((missing as HubmoeError).code).toBe('NOT_FOUND');
    expect((missing as HubmoeError).message).toMatch(/no hubmoe\.json/);
    const fp16 = await loadModel(model.dir, { dtype: 'fp16' }).catch((e: unknown) => e);
    expect((fp16 as HubmoeError).message).toMatch(/fp16 models run on CUDA only/);
  });
});
