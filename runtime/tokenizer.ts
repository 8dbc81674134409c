/** The tokenizer of a model dir (tokenizer.json + tokenizer_config.json), through @huggingface/tokenizers. */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { HubmoeError } from '../src/errors.js';

export interface TextTokenizer {
  encode(text: string, addSpecialTokens?: boolean): number[];
  decode(ids: readonly number[], skipSpecialTokens?: boolean): string;
}

class HfTokenizer implements TextTokenizer {
  constructor(private readonly tok: Tokenizer) {}

  encode(text: string, addSpecialTokens = true): number[] {
    return this.tok.encode(text, { add_special_tokens: addSpecialTokens }).ids;
  }

  decode(ids: readonly number[], skipSpecialTokens = true): string {
    // @huggingface/tokenizers refuses an empty list; its text is empty.
    return ids.length ? this.tok.decode([...ids], { skip_special_tokens: skipSpecialTokens }) : '';
  }
}

/**
 * The text of a growing token sequence, decoding only the last few tokens at each step (the offsets vLLM's
 * detokenizer keeps): the new text is decode(window + new tokens) minus decode(window), where the window is the
 * previous step's tokens, so decoders that look at neighbouring tokens (a stripped leading space, byte fallback)
 * see the same context as in a whole decode. Text is released only once it does not end in an incomplete
 * UTF-8 sequence (U+FFFD). Decoding the whole sequence at every token made streaming quadratic in its length.
 */
export class IncrementalDecoder {
  private readonly ids: number[] = [];
  private prefix = 0;
  private read = 0;
  /** The text released so far. */
  text = '';

  constructor(private readonly tok: TextTokenizer) {}

  /** Adds a token; returns the text released so far. */
  push(id: number): string {
    this.ids.push(id);
    const before = this.tok.decode(this.ids.slice(this.prefix, this.read));
    const after = this.tok.decode(this.ids.slice(this.prefix));
    if (after.length > before.length && after.startsWith(before) && !after.endsWith('\uFFFD')) {
      this.text += after.slice(before.length);
      this.prefix = this.read;
      this.read = this.ids.length;
    }
    return this.text;
  }
}

export async function loadTokenizer(dir: string): Promise<TextTokenizer | undefined> {
  let json: string;
  try {
    json = await readFile(join(dir, 'tokenizer.json'), 'utf-8');
  } catch {
    return undefined;
  }
  let config: object = {};
  try {
    config = JSON.parse(await readFile(join(dir, 'tokenizer_config.json'), 'utf-8')) as object;
  } catch {
    // optional
  }
  try {
    return new HfTokenizer(new Tokenizer(JSON.parse(json) as object, config));
  } catch (err) {
    throw new HubmoeError('CORRUPT_FILE', `${join(dir, 'tokenizer.json')}: cannot load the tokenizer (${(err as Error).message})`);
  }
}

/**
 * Token ids of a long text for perplexity: the text's lines encoded 2000 at a time (joined by
 * newlines, no special tokens) and concatenated — as fixtures/scripts/train_brown.py does, so that
 * perplexities compare with the references'.
 */
export function encodeCorpus(tok: TextTokenizer, text: string, linesPerChunk = 2000, maxTokens = Infinity): number[] {
  const lines = text.split('\n');
  const ids: number[] = [];
  // Stops after the chunk that reaches maxTokens: the ids are a prefix of the whole text's.
  for (let i = 0; i < lines.length && ids.length < maxTokens; i += linesPerChunk) {
    for (const id of tok.encode(lines.slice(i, i + linesPerChunk).join('\n'), false)) ids.push(id);
  }
  return ids;
}
