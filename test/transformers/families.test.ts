/**
 * transformers.js runs every family's converted fixture through hubmoe/transformers: greedy
 * generation equals the reference implementation's greedy tokens and hubmoe's own generate, and it
 * really decodes with the caches (one session run per token, the second run feeding one token and
 * the first run's non-zero states).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { installation } from '../../src/transformers/index.js';
import { AutoModelForCausalLM, DynamicCache, Tensor, env } from '@huggingface/transformers';
import { loadModel } from '../../runtime/model.js';
import type { HubmoeModel } from '../../runtime/model.js';
import { Reference, tempDir } from '../helpers.js';
import { FAMILY_FIXTURES, convertFixture, greedyReference, probeSession } from './helpers.js';
import type { GreedyCase } from './helpers.js';

env.allowRemoteModels = false;
env.allowLocalModels = true;

type TjsModel = Awaited<ReturnType<typeof AutoModelForCausalLM.from_pretrained>>;

function ids(row: number[]): Tensor {
  return new Tensor('int64', BigInt64Array.from(row, (t) => BigInt(t)), [1, row.length]);
}

function ones(n: number): Tensor {
  return new Tensor('int64', new BigInt64Array(n).fill(1n), [1, n]);
}

/** Greedy generation of exactly `n` tokens (eos never stops it) → the generated ids. */
async function greedy(model: TjsModel, prompt: number[], n: number, extra: Record<string, unknown> = {}): Promise<{ tokens: number[]; result: unknown }> {
  const result = await model.generate({
    input_ids: ids(prompt),
    attention_mask: ones(prompt.length),
    max_new_tokens: n,
    do_sample: false,
    eos_token_id: [],
    ...extra,
  } as Parameters<TjsModel['generate']>[0]);
  const sequences = (result instanceof Tensor ? result : (result as { sequences: Tensor }).sequences).tolist() as bigint[][];
  return { tokens: sequences[0]!.slice(prompt.length).map(Number), result };
}

it('importing hubmoe/transformers installs the plugin on transformers.js', () => {
  expect(installation.installed).toBe(true);
  expect(installation.version).toMatch(/^4\./);
  expect(AutoModelForCausalLM.MODEL_CLASS_MAPPINGS.some((m) => m.get('jamba') === 'NemotronHForCausalLM')).toBe(true);
});

describe.each(FAMILY_FIXTURES.map((name) => ({ name })))('transformers.js: $name', ({ name }) => {
  let dir: string;
  let model: TjsModel;
  let hubmoe: HubmoeModel;
  let ref: GreedyCase;

  beforeAll(async () => {
    dir = await convertFixture(name, await tempDir('hubmoe-tjs-'));
    ref = await greedyReference(name);
    model = await AutoModelForCausalLM.from_pretrained(dir, { dtype: 'fp32' });
    hubmoe = await loadModel(dir, { threads: 1 });
  });
  afterAll(async () => {
    await model?.dispose();
    await hubmoe?.dispose();
  });

  it('loads as a decoder with the hubmoe sub-blocks as its layers', () => {
    const config = model.config as unknown as Record<string, unknown>;
    expect(config.model_type).toBe('nemotron_h');
    expect(config.num_hidden_layers).toBe((config.layers_block_type as string[]).length);
    expect((config.hubmoe as Record<string, unknown>).source_model_type).toBeTypeOf('string');
  });

  it('greedy generation equals the reference tokens and hubmoe generate, decoding with the caches', async () => {
    const runs = probeSession(model as unknown as Parameters<typeof probeSession>[0]);
    const n = ref.tokens.length;
    const { tokens, result } = await greedy(model, ref.prompt, n, { return_dict_in_generate: true });
    expect(tokens).toEqual(ref.tokens);
    const own = await hubmoe.generate([ref.prompt], { maxNewTokens: n, ignoreEos: true });
    expect(tokens).toEqual(own.tokens[0]);

    // One session run per token: a prefill, then single-token steps fed the previous run's caches.
    const T = ref.prompt.length;
    expect(runs).toHaveLength(n);
    expect(runs[0]!.input_ids!.dims).toEqual([1, T]);
    expect(runs[1]!.input_ids!.dims).toEqual([1, 1]);
    expect(runs[1]!.attention_mask!.dims).toEqual([1, T + 1]);
    const caches = Object.keys(runs[1]!).filter((k) => k.startsWith('past_'));
    const kinds = (model.config as unknown as { layers_block_type: string[] }).layers_block_type;
    expect(caches.length).toBe(kinds.filter((k) => k === 'mamba').length * 2 + kinds.filter((k) => k === 'attention').length * 2);
    for (const name of caches) {
      if (name.startsWith('past_key_values.')) {
        expect(runs[0]![name]!.dims.at(-2)).toBe(0);
        expect(runs[1]![name]!.dims.at(-2)).toBe(T);
      } else {
        expect(runs[0]![name]!.allZero).toBe(true);
        expect(runs[1]![name]!.allZero).toBe(false);
      }
    }
    // The cache knows how many tokens it holds, with or without an attention layer.
    const cache = (result as { past_key_values: { get_seq_length(): number; dispose(): Promise<void> } }).past_key_values;
    expect(cache.get_seq_length()).toBe(T + n - 1);
    await cache.dispose();
  });

  it('a longer generation from another prompt equals hubmoe generate', async () => {
    const r = await Reference.open(name);
    const prompt = (await r.rows('input_ids'))[0]!.slice(0, 5);
    await r.close();
    const { tokens } = await greedy(model, prompt, 12);
    const own = await hubmoe.generate([prompt], { maxNewTokens: 12, ignoreEos: true });
    expect(tokens).toEqual(own.tokens[0]);
  });

  it('a caller-held DynamicCache continues where the last call stopped (only new tokens are fed)', async () => {
    const cache = new DynamicCache();
    const first = await greedy(model, ref.prompt, 4, { past_key_values: cache });
    const T = ref.prompt.length;
    expect(cache.get_seq_length()).toBe(T + 3);
    const more = [...ref.prompt, ...first.tokens, 1, 2];
    const runs = probeSession(model as unknown as Parameters<typeof probeSession>[0]);
    const second = await greedy(model, more, 4, { past_key_values: cache });
    // The cache holds T + 3 tokens: the 4th generated token and the two new ones are all that is fed.
    expect(runs[0]!.input_ids!.dims).toEqual([1, 3]);
    const own = await hubmoe.generate([more], { maxNewTokens: 4, ignoreEos: true });
    expect(second.tokens).toEqual(own.tokens[0]);
    await cache.dispose();
  });
});
