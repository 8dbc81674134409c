/**
 * The pipeline API on jamba-demo (the fixture with a tokenizer): `pipeline('text-generation', dir)`
 * generates the reference's greedy tokens, its text is hubmoe's own generateText, and TextStreamer
 * streams the same text.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import '../../src/transformers/index.js';
import { TextStreamer, env, pipeline } from '@huggingface/transformers';
import type { TextGenerationPipeline } from '@huggingface/transformers';
import { loadModel } from '../../runtime/model.js';
import type { HubmoeModel } from '../../runtime/model.js';
import { tempDir } from '../helpers.js';
import { convertFixture, greedyReference } from './helpers.js';
import type { GreedyCase } from './helpers.js';

env.allowRemoteModels = false;
env.allowLocalModels = true;

describe('pipeline("text-generation") on a hubmoe model dir', () => {
  let generator: TextGenerationPipeline;
  let hubmoe: HubmoeModel;
  let ref: GreedyCase;
  let promptText: string;

  beforeAll(async () => {
    const dir = await convertFixture('jamba-demo', await tempDir('hubmoe-tjs-pipe-'));
    ref = await greedyReference('jamba-demo');
    generator = (await pipeline('text-generation', dir, { dtype: 'fp32' })) as TextGenerationPipeline;
    hubmoe = await loadModel(dir, { threads: 1 });
    promptText = generator.tokenizer.decode(ref.prompt, { skip_special_tokens: false });
  });
  afterAll(async () => {
    await generator?.dispose();
    await hubmoe?.dispose();
  });

  it('the reference prompt round-trips through the tokenizer (so the pipeline sees the reference ids)', () => {
    expect(generator.tokenizer.encode(promptText, { add_special_tokens: false })).toEqual(ref.prompt);
  });

  it('generates the reference greedy tokens; its text is hubmoe generateText', async () => {
    const streamed: bigint[][] = [];
    const streamer = new TextStreamer(generator.tokenizer, { skip_prompt: true, callback_function: () => {}, token_callback_function: (t: bigint[]) => streamed.push(t) });
    const out = await generator(promptText, {
      max_new_tokens: ref.tokens.length,
      do_sample: false,
      eos_token_id: [],
      add_special_tokens: false,
      return_full_text: false,
      streamer,
    });
    expect(streamed.flat().map(Number)).toEqual(ref.tokens);
    const text = (out as Array<{ generated_text: string }>)[0]!.generated_text;
    expect(text).toBe(generator.tokenizer.decode(ref.tokens, { skip_special_tokens: true }));
    const [own] = await hubmoe.generateText(promptText, { maxNewTokens: ref.tokens.length, ignoreEos: true, addSpecialTokens: false });
    expect(text).toBe(own);
  });

  it('with default settings (BOS added, eos stops) it equals hubmoe generateText', async () => {
    const prompt = 'The jury said';
    const out = await generator(prompt, { max_new_tokens: 24, do_sample: false });
    const [own] = await hubmoe.generateText(prompt, { maxNewTokens: 24 });
    expect((out as Array<{ generated_text: string }>)[0]!.generated_text).toBe(prompt + own);
  });

  it('TextStreamer streams the generated text as it comes', async () => {
    const chunks: string[] = [];
    const streamer = new TextStreamer(generator.tokenizer, { skip_prompt: true, callback_function: (text: string) => chunks.push(text) });
    const out = await generator('The county', { max_new_tokens: 20, do_sample: false, eos_token_id: [], return_full_text: false, streamer });
    const text = (out as Array<{ generated_text: string }>)[0]!.generated_text;
    expect(chunks.length).toBeGreaterThan(1);
    expect(chunks.join('')).toBe(text);
    const [own] = await hubmoe.generateText('The county', { maxNewTokens: 20, ignoreEos: true });
    expect(text).toBe(own);
  });

  it('a batch of prompts (left-padded) generates what each prompt generates alone', async () => {
    const prompts = ['The jury said', 'It was'];
    const batch = (await generator(prompts, { max_new_tokens: 8, do_sample: false, eos_token_id: [], return_full_text: false })) as Array<Array<{ generated_text: string }>>;
    for (let i = 0; i < prompts.length; i++) {
      const alone = (await generator(prompts[i]!, { max_new_tokens: 8, do_sample: false, eos_token_id: [], return_full_text: false })) as Array<{ generated_text: string }>;
      expect(batch[i]![0]!.generated_text).toBe(alone[0]!.generated_text);
    }
  });
});

describe('a SCAP-pruned model dir in the pipeline', () => {
  it('generates what hubmoe generateText generates from the pruned model (the extra sparsity outputs are ignored)', async () => {
    const { writeFile } = await import('node:fs/promises');
    const { join } = await import('node:path');
    const { convert } = await import('../../src/convert.js');
    const { prune } = await import('../../src/scap/prune.js');
    const { fixture } = await import('../helpers.js');
    const dir = await tempDir('hubmoe-tjs-scap-');
    await convert(fixture('brown', 'jamba', 'checkpoint'), { outDir: join(dir, 'dense') });
    const text = join(dir, 'calib.txt');
    await writeFile(text, 'The jury said it did find that the city was well run.\nIt was a fine day in Atlanta, and the election was over.\n'.repeat(30));
    await prune(join(dir, 'dense'), { outDir: join(dir, 'pruned'), calib: text, calibTokens: 512, window: 128, sparsity: '0.4' });
    const gen = (await pipeline('text-generation', join(dir, 'pruned'), { dtype: 'fp32' })) as TextGenerationPipeline;
    const own = await loadModel(join(dir, 'pruned'), { threads: 1 });
    try {
      const out = await gen('The jury said', { max_new_tokens: 12, do_sample: false, return_full_text: false });
      const [want] = await own.generateText('The jury said', { maxNewTokens: 12 });
      expect((out as Array<{ generated_text: string }>)[0]!.generated_text).toBe(want);
      expect(own.scapStats().size).toBe(28);
    } finally {
      await gen.dispose();
      await own.dispose();
    }
  });
});
