/**
 * IncrementalDecoder (runtime/tokenizer.ts): streaming a sequence token by token releases text that is always a
 * prefix of the whole sequence's decode, and all of it once the sequence ends on a complete character — for a
 * byte-level BPE (the Brown tokenizer) on multilingual text and on random ids, and for a sentencepiece-style
 * tokenizer (Metaspace spaces, byte fallback, a stripped leading space) like Jamba's.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { describe, expect, it } from 'vitest';
import { makeRng } from '../../runtime/sampling.js';
import { IncrementalDecoder, loadTokenizer } from '../../runtime/tokenizer.js';
import type { TextTokenizer } from '../../runtime/tokenizer.js';
import { FIXTURES } from '../helpers.js';

function stream(tok: TextTokenizer, ids: number[]): void {
  const d = new IncrementalDecoder(tok);
  let last = '';
  for (let i = 0; i < ids.length; i++) {
    const text = d.push(ids[i]!);
    const whole = tok.decode(ids.slice(0, i + 1));
    expect(whole.startsWith(text), `step ${i}: ${JSON.stringify(text)} is not a prefix of ${JSON.stringify(whole)}`).toBe(true);
    expect(text.startsWith(last)).toBe(true);
    last = text;
  }
  const whole = tok.decode(ids);
  if (!whole.endsWith('\uFFFD')) expect(last).toBe(whole);
}

/** A sentencepiece-style tokenizer.json: ▁-prefixed pieces, <0xNN> byte tokens, Jamba/Llama's decoder sequence. */
function metaspaceTokenizer(): TextTokenizer {
  const pieces = ['<unk>', '<s>', '</s>', '▁the', '▁cat', 's', '▁sat', '▁on', '▁a', '▁mat', '.', '▁caf', 'é', '▁', 'x'];
  const vocab: Record<string, number> = {};
  pieces.forEach((p, i) => (vocab[p] = i));
  for (let b = 0; b < 256; b++) vocab[`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`] = pieces.length + b;
  const json = {
    version: '1.0',
    added_tokens: [
      { id: 0, content: '<unk>', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true },
      { id: 1, content: '<s>', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true },
      { id: 2, content: '</s>', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true },
    ],
    normalizer: null,
    pre_tokenizer: { type: 'Metaspace', replacement: '▁', prepend_scheme: 'first', split: false },
    post_processor: null,
    decoder: {
      type: 'Sequence',
      decoders: [
        { type: 'Replace', pattern: { String: '▁' }, content: ' ' },
        { type: 'ByteFallback' },
        { type: 'Fuse' },
        { type: 'Strip', content: ' ', start: 1, stop: 0 },
      ],
    },
    model: { type: 'BPE', dropout: null, unk_token: '<unk>', continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: true, byte_fallback: true, vocab, merges: [] },
  };
  const t = new Tokenizer(json, {});
  return { encode: (s) => t.encode(s).ids, decode: (ids, skip = true) => (ids.length ? t.decode([...ids], { skip_special_tokens: skip }) : '') };
}

describe('IncrementalDecoder', () => {
  it('byte-level BPE: multilingual text and random ids stream as their whole decode', async () => {
    const tok = (await loadTokenizer(join(FIXTURES, 'brown', 'tokenizer')))!;
    expect(tok).toBeDefined();
    const text = 'The jury said — café, naïve, 日本語の文章, emoji 😀👍 and "quotes".\nA new line.';
    stream(tok, tok.encode(text, false));
    const V = JSON.parse(await readFile(join(FIXTURES, 'brown', 'tokenizer', 'tokenizer.json'), 'utf-8')).model.vocab;
    const size = Object.keys(V).length;
    const rng = makeRng(5);
    for (let s = 0; s < 4; s++) stream(tok, Array.from({ length: 150 }, () => Math.floor(rng() * size)));
  });

  it('sentencepiece style: Metaspace spaces, byte fallback and the stripped leading space', () => {
    const tok = metaspaceTokenizer();
    // ▁the ▁cat s ▁sat ▁on ▁a ▁mat . ▁caf é then the bytes of "€" (E2 82 AC) one token each, then ▁ x
    const ids = [3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 15 + 0xe2, 15 + 0x82, 15 + 0xac, 13, 14];
    expect(tok.decode(ids)).toBe('the cats sat on a mat. café€ x');
    stream(tok, ids);
    const d = new IncrementalDecoder(tok);
    const seen = ids.map((id) => d.push(id));
    // The euro sign is released only with its last byte.
    expect(seen[10]).toBe('the cats sat on a mat. café');
    expect(seen[11]).toBe('the cats sat on a mat. café');
    expect(seen[12]).toBe('the cats sat on a mat. café€');
  });
});
