/**
 * transformers.js on hubmoe's real native runtime (runtime/native, CPU sessions): the 'hubmoe'
 * backend (src/transformers/ort-backend.ts) over the N-API addon, with the caches handed from step to
 * step as the addon's device values (in CPU memory here; CUDA memory on a CUDA session). Outside CI
 * it is skipped, with the reason, when the addon is not built (npm run build:native).
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { HUBMOE_BACKEND_NAME, registerNativeBackend } from '../../src/transformers/index.js';
import { AutoModelForCausalLM, Tensor, env } from '@huggingface/transformers';
import { loadNative, nativeStatus } from '../../runtime/native/index.js';
import { tempDir } from '../helpers.js';
import { convertFixture, greedyReference } from './helpers.js';

env.allowRemoteModels = false;
env.allowLocalModels = true;

const native = loadNative();
// As in test/native: CI builds the addon (npm run build:native), so there a missing addon fails instead of skipping.
const skip = !native && !process.env.CI;
const reason = nativeStatus().reason;
if (!native) console.error(`\n!! test/transformers/native.test.ts: hubmoe's native addon is not available (${reason})\n`);

interface Probe {
  cacheFeedLocations: string[][];
  deviceOutputs: Array<{ disposed: boolean }>;
}

function probe(model: unknown): Probe {
  const session = (model as { sessions: { model: { run: (feeds: Record<string, { location: string }>) => Promise<Record<string, { location: string; gpuBuffer?: unknown }>> } } }).sessions.model;
  const run = session.run.bind(session);
  const p: Probe = { cacheFeedLocations: [], deviceOutputs: [] };
  session.run = async (feeds) => {
    p.cacheFeedLocations.push(Object.entries(feeds).filter(([k]) => k.startsWith('past')).map(([, v]) => v.location));
    const out = await run(feeds);
    for (const t of Object.values(out)) if (t.location === 'gpu-buffer') p.deviceOutputs.push(t.gpuBuffer as { disposed: boolean });
    return out;
  };
  return p;
}

describe.skipIf(skip)(`transformers.js on the native runtime${native ? '' : ` (SKIPPED: ${reason})`}`, () => {
  let root: string;

  beforeAll(async () => {
    expect(native, `hubmoe's native addon is not available: ${reason}`).toBeDefined();
    root = await tempDir('hubmoe-tjs-native-');
    await registerNativeBackend(native!, { devices: [], description: 'native addon, CPU sessions (test)' });
  });

  for (const name of ['jamba-demo', 'blackmamba-glu-bias', 'mamba-hf']) {
    it(`${name}: greedy tokens equal the reference, the caches never leave the backend`, async () => {
      const dir = await convertFixture(name, root);
      const ref = await greedyReference(name);
      const model = await AutoModelForCausalLM.from_pretrained(dir, {
        dtype: 'fp32',
        session_options: { executionProviders: [{ name: HUBMOE_BACKEND_NAME, device: 'cpu' }] as never },
      });
      try {
        const p = probe(model);
        const T = ref.prompt.length;
        const out = (await model.generate({
          input_ids: new Tensor('int64', BigInt64Array.from(ref.prompt, BigInt), [1, T]),
          attention_mask: new Tensor('int64', new BigInt64Array(T).fill(1n), [1, T]),
          max_new_tokens: ref.tokens.length,
          do_sample: false,
          eos_token_id: [],
        } as never)) as Tensor;
        expect((out.tolist() as bigint[][])[0]!.slice(T).map(Number)).toEqual(ref.tokens);
        // The first step starts from zero caches on the host; every later step feeds the backend's own values.
        expect(p.cacheFeedLocations).toHaveLength(ref.tokens.length);
        expect(new Set(p.cacheFeedLocations[0])).toEqual(new Set(['cpu']));
        for (const step of p.cacheFeedLocations.slice(1)) expect(new Set(step)).toEqual(new Set(['gpu-buffer']));
        expect(p.deviceOutputs.length).toBe(ref.tokens.length * p.cacheFeedLocations[0]!.length);
        expect(native!.isDeviceValue(p.deviceOutputs[0])).toBe(true);
        // transformers.js freed every one of them: replaced caches as it went, the last at the end.
        expect(p.deviceOutputs.every((v) => v.disposed)).toBe(true);
      } finally {
        await model.dispose();
      }
    });
  }
});
