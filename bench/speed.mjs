#!/usr/bin/env node
/**
 * Prefill and decode speed of a converted model dir with hubmoe's runtime.
 *
 *   npm run build && node bench/speed.mjs --model DIR [--device cuda] [--backend native|onnxruntime-node]
 *       [--prefill 2048] [--batches 1,16] [--prompt 64] [--steps 32] [--repeat 3] [--threads N] [--json FILE] [--label NAME]
 *       [--graph dynamic|static|cuda-graph]   (default: what loadModel picks; on CUDA with the native backend,
 *                                              the static-cache graph with CUDA graphs of the decode step)
 *   node bench/speed.mjs --convert CHECKPOINT --out DIR --target fused|portable --dtype fp16   (convert first)
 *
 * Prefill: one forward over `prefill` random tokens at batch 1 (caches created, the logits of every position
 * copied to the host), best of `repeat` after a warm-up; then the time to the first token of generate() on
 * the same prompt (only the last position's logits copied). Decode: a `prompt`-token prefill at each batch size, then `steps`
 * cached one-token steps; the time per step is the time from the prefill's token to the last one over the steps
 * between, best of `repeat` generations after a warm-up.
 * Results: tokens/s for prefill; ms/step and tokens/s (batch × steps/s) for decode.
 */
import { decodeMsPerStep } from './decode-time.mjs';
import { writeFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { convert } from '../dist/src/convert.js';
import { graphChoice, loadModel } from '../dist/runtime/model.js';

const { values } = parseArgs({
  options: {
    model: { type: 'string' },
    convert: { type: 'string' },
    out: { type: 'string' },
    target: { type: 'string', default: 'fused' },
    dtype: { type: 'string', default: 'fp16' },
    device: { type: 'string', default: 'cuda' },
    backend: { type: 'string' },
    prefill: { type: 'string', default: '2048' },
    batches: { type: 'string', default: '1,16' },
    prompt: { type: 'string', default: '64' },
    steps: { type: 'string', default: '32' },
    repeat: { type: 'string', default: '3' },
    json: { type: 'string' },
    label: { type: 'string' },
    profile: { type: 'string' },
    threads: { type: 'string' },
    graph: { type: 'string' },
  },
});

const log = (m) => process.stderr.write(`${m}\n`);

if (values.convert) {
  const t0 = performance.now();
  let last = 0;
  await convert(values.convert, {
    outDir: values.out,
    target: values.target,
    dtype: values.dtype,
    overwrite: true,
    log: {
      info: log,
      warn: (m) => log(`warning: ${m}`),
      progress: (label, done, total) => {
        if (done - last > 2 ** 30 || done === total) {
          last = done;
          log(`${label}: ${(done / 2 ** 30).toFixed(1)} / ${(total / 2 ** 30).toFixed(1)} GiB`);
        }
      },
    },
  });
  log(`converted in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  process.exit(0);
}

const model = await loadModel(values.model, {
  ...graphChoice(values.graph),
  device: values.device,
  ...(values.backend ? { backend: values.backend } : {}),
  ...(values.profile ? { profileFile: values.profile } : {}),
  ...(values.threads ? { threads: Number(values.threads) } : {}),
});
const V = model.spec.vocab.size;
let seed = 1234;
const rand = () => {
  seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
  return 3 + (seed % (V - 3));
};
const ids = (b, t) => Array.from({ length: b }, () => Array.from({ length: t }, rand));
const result = { label: values.label ?? values.model, device: model.device, backend: model.backendName, dtype: model.dtype, target: model.spec.export?.target, graph: model.graph };

// Prefill.
const P = Number(values.prefill);
const prefillIds = ids(1, P);
await model.forward(prefillIds); // warm-up
let best = Infinity;
for (let r = 0; r < Number(values.repeat); r++) {
  const t0 = performance.now();
  await model.forward(prefillIds);
  best = Math.min(best, performance.now() - t0);
}
result.prefill = { tokens: P, seconds: best / 1000, tokensPerSecond: P / (best / 1000) };
log(`prefill ${P}: ${(best / 1000).toFixed(3)} s (${(P / (best / 1000)).toFixed(0)} tok/s)`);
// Time to the first token: the same prompt through generate(), which keeps only the last position's logits.
best = Infinity;
for (let r = 0; r < Number(values.repeat); r++) {
  const t0 = performance.now();
  await model.generate(prefillIds, { maxNewTokens: 1, ignoreEos: true });
  best = Math.min(best, performance.now() - t0);
}
result.firstToken = { tokens: P, seconds: best / 1000 };
log(`first token after a ${P}-token prompt: ${(best / 1000).toFixed(3)} s`);

// Decode.
result.decode = [];
const steps = Number(values.steps);
for (const B of values.batches.split(',').map(Number)) {
  const prompts = ids(B, Number(values.prompt));
  await model.generate(prompts, { maxNewTokens: 4, ignoreEos: true }); // warm-up
  // From the prefill's token to the last step's, over the steps between (bench/decode-time.mjs); the best of
  // `repeat` generations.
  let ms = Infinity;
  for (let r = 0; r < Number(values.repeat); r++) ms = Math.min(ms, await decodeMsPerStep(model, prompts, steps, { row: B - 1 }));
  result.decode.push({ batch: B, msPerStep: ms, tokensPerSecond: (B * 1000) / ms, steps });
  log(`decode batch ${B}: ${ms.toFixed(2)} ms/step (${((B * 1000) / ms).toFixed(1)} tok/s)`);
}
await model.dispose();
console.log(JSON.stringify(result));
if (values.json) await writeFile(values.json, JSON.stringify(result, null, 2));
