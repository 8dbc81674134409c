import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { convert } from '../../src/convert.js';
import { loadModel } from '../../runtime/model.js';
import { fixture, tempDir } from '../helpers.js';

/** A byte-free BPE tokenizer.json with `n` single-character-ish tokens and no merges. */
function tinyTokenizer(n: number): string {
  const vocab: Record<string, number> = {};
  for (let i = 0; i < n; i++) vocab[`t${i}`] = i;
  return JSON.stringify({
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [],
    normalizer: null,
    pre_tokenizer: { type: 'Whitespace' },
    post_processor: null,
    decoder: null,
    model: { type: 'BPE', dropout: null, unk_token: 't0', continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, vocab, merges: [] },
  });
}

describe('a padded vocabulary (BlackMamba: more embedding rows than tokens)', () => {
  it('takes vocab.size from --tokenizer and never samples the padding ids', async () => {
    const dir = await tempDir();
    const tok = join(dir, 'tok');
    await mkdir(tok);
    await writeFile(join(tok, 'tokenizer.json'), tinyTokenizer(200));
    const out = join(dir, 'model');
    const res = await convert(fixture('blackmamba-plain', 'checkpoint'), { outDir: out, tokenizer: tok });
    expect(res.spec.vocab).toMatchObject({ size: 200, padded_size: 264 });
    expect(res.files).toContain('tokenizer.json');
    const model = await loadModel(out, { threads: 1 });
    const logits = await model.forward([[1, 2, 3]]);
    expect(logits.dims[2]).toBe(264);
    const gen = await model.generate([[1, 2, 3], [7, 8]], { maxNewTokens: 40, ignoreEos: true, temperature: 50, seed: 9 });
    const all = gen.tokens.flat();
    expect(all.length).toBe(80);
    expect(Math.max(...all)).toBeLessThan(200);
    await model.dispose();
  });

  it('without a tokenizer, every embedding row is a token', async () => {
    const dir = await tempDir();
    const res = await convert(fixture('blackmamba-plain', 'checkpoint'), { outDir: join(dir, 'm'), dryRun: true });
    expect(res.spec.vocab).toMatchObject({ size: 264, padded_size: 264 });
  });
});
