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
    return this.tok.decode([...ids], { skip_special_tokens: skipSpecialTokens });
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
