/**
 * With hubmoe's backend registered as 'hubmoe' (src/transformers/ort-backend.ts over the native
 * runtime), `device: 'cuda'` and `executionProviders: ['hubmoe']` run through it, with the caches
 * handed around as device values. A stand-in for the native runtime (fake-backend.ts: CPU sessions,
 * "device" values in JS memory) plays the addon, so this proves the routing, the onnxruntime-common
 * backend and the cache contract — not CUDA.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HUBMOE_BACKEND_NAME, cacheOutputNames, hubmoeBackend, markHubmoeBackend, registerNativeBackend, unmarkHubmoeBackend } from '../../src/transformers/index.js';
import { AutoModelForCausalLM, Tensor, env, pipeline } from '@huggingface/transformers';
import type { TextGenerationPipeline } from '@huggingface/transformers';
import { convert } from '../../src/convert.js';
import { fixture, tempDir } from '../helpers.js';
import { FakeNative } from './fake-backend.js';
import { convertFixture, greedyReference } from './helpers.js';
import type { GreedyCase } from './helpers.js';

env.allowRemoteModels = false;
env.allowLocalModels = true;

type TjsModel = Awaited<ReturnType<typeof AutoModelForCausalLM.from_pretrained>>;

async function greedy(model: TjsModel, prompt: number[], n: number): Promise<number[]> {
  const out = (await model.generate({
    input_ids: new Tensor('int64', BigInt64Array.from(prompt, BigInt), [1, prompt.length]),
    attention_mask: new Tensor('int64', new BigInt64Array(prompt.length).fill(1n), [1, prompt.length]),
    max_new_tokens: n,
    do_sample: false,
    eos_token_id: [],
  } as never)) as Tensor;
  return (out.tolist() as bigint[][])[0]!.slice(prompt.length).map(Number);
}

describe('the hubmoe backend slot', () => {
  const fake = new FakeNative();
  let root: string;
  let jamba: string;
  let mamba: string;

  beforeAll(async () => {
    root = await tempDir('hubmoe-tjs-backend-');
    jamba = await convertFixture('jamba-demo', root);
    mamba = await convertFixture('blackmamba-glu-bias', root);
    expect(hubmoeBackend()).toBeUndefined();
    const info = await registerNativeBackend(fake, { description: 'test stand-in (CPU)' });
    expect(info).toMatchObject({ name: HUBMOE_BACKEND_NAME, devices: ['cuda'], deviceCaches: true });
  });
  afterAll(() => unmarkHubmoeBackend());

  for (const [name, dirOf] of [
    ['jamba-demo', () => jamba],
    ['blackmamba-glu-bias', () => mamba],
  ] as const) {
    it(`device: 'cuda' runs ${name} through it with the caches as device buffers`, async () => {
      const ref: GreedyCase = await greedyReference(name);
      const before = { ...fake.stats, created: fake.created.length };
      const model = await AutoModelForCausalLM.from_pretrained(dirOf(), { device: 'cuda', dtype: 'fp32' });
      try {
        expect(fake.created.length).toBe(before.created + 1);
        const created = fake.created.at(-1)!;
        expect(created.path).toBe(join(dirOf(), 'onnx', 'model.onnx'));
        expect(created.options.device).toBe('cuda');
        const names = cacheOutputNames(model.config as unknown as Record<string, unknown>);

        const tokens = await greedy(model, ref.prompt, ref.tokens.length);
        expect(tokens).toEqual(ref.tokens);
        // Every cache output is asked for on the device; the logits are not.
        expect([...fake.deviceOutputRequests.at(-1)!].sort()).toEqual([...names].sort());
        const n = ref.tokens.length;
        const s = fake.stats;
        expect(s.runs - before.runs).toBe(n);
        // Each run returns every cache on the device; every run after the first takes them all back.
        expect(s.deviceOutputs - before.deviceOutputs).toBe(n * names.length);
        expect(s.deviceFeeds - before.deviceFeeds).toBe((n - 1) * names.length);
        // transformers.js never copied a cache to the CPU, never fed a freed one, and freed them all.
        expect(s.downloads).toBe(0);
        expect(s.useAfterDispose).toBe(0);
        expect(s.disposed - before.disposed).toBe(n * names.length);
      } finally {
        await model.dispose();
      }
    });
  }

  it("session_options: { executionProviders: ['hubmoe'] } selects it on any device", async () => {
    const before = fake.created.length;
    const model = await AutoModelForCausalLM.from_pretrained(mamba, {
      dtype: 'fp32',
      session_options: { executionProviders: [{ name: HUBMOE_BACKEND_NAME, device: 'cuda', deviceId: 1 }] as never, intraOpNumThreads: 3 },
    });
    await model.dispose();
    expect(fake.created.length).toBe(before + 1);
    expect(fake.created.at(-1)!.options).toMatchObject({ device: 'cuda', deviceId: 1, threads: 3 });
  });

  it('pipeline(..., { device: "cuda" }) generates what the CPU pipeline generates', async () => {
    const before = fake.created.length;
    const onHubmoe = (await pipeline('text-generation', jamba, { device: 'cuda', dtype: 'fp32' })) as TextGenerationPipeline;
    const onCpu = (await pipeline('text-generation', jamba, { dtype: 'fp32' })) as TextGenerationPipeline;
    try {
      expect(fake.created.length).toBe(before + 1);
      const a = await onHubmoe('The jury said', { max_new_tokens: 16, do_sample: false });
      const b = await onCpu('The jury said', { max_new_tokens: 16, do_sample: false });
      expect(a).toEqual(b);
    } finally {
      await onHubmoe.dispose();
      await onCpu.dispose();
    }
  });

  it("device: 'cuda' picks the fp16 graph when the model dir has one", async () => {
    const both = join(root, 'jamba-both');
    await convert(fixture('jamba-demo', 'checkpoint'), { outDir: both, dtype: 'both' });
    fake.failCreate = 'stand-in does not run fp16';
    try {
      await expect(AutoModelForCausalLM.from_pretrained(both, { device: 'cuda' })).rejects.toThrow(/model_fp16\.onnx/);
      expect(fake.created.at(-1)!.path).toBe(join(both, 'onnx', 'model_fp16.onnx'));
    } finally {
      fake.failCreate = undefined;
    }
    // CPU keeps the fp32 graph.
    const before = fake.created.length;
    const model = await AutoModelForCausalLM.from_pretrained(both);
    await model.dispose();
    expect(fake.created.length).toBe(before);
  });

  it("without a registered hubmoe backend, device: 'cuda' is left to transformers.js's own CUDA provider", async () => {
    unmarkHubmoeBackend();
    const before = fake.created.length;
    try {
      // This machine has no CUDA provider libraries: onnxruntime-node's CUDA EP fails to load, which
      // is the proof that the session went to transformers.js's own path and not to the stand-in.
      const result = await AutoModelForCausalLM.from_pretrained(mamba, { device: 'cuda', dtype: 'fp32' }).then(
        async (m) => {
          await m.dispose();
          return 'loaded';
        },
        (err: unknown) => String(err),
      );
      expect(fake.created.length).toBe(before);
      if (result !== 'loaded') expect(result).toMatch(/cuda/i);
    } finally {
      // onnxruntime-common keeps the registration; only the record that routes device 'cuda' to it was removed.
      markHubmoeBackend({ deviceCaches: true });
    }
  });
});
