#!/usr/bin/env node
/**
 * perplexity() with the negative log-likelihoods computed by ONNX Runtime beside the model (runtime/nll.ts, the
 * default) against the JavaScript log-sum-exp it replaced (HUBMOE_NLL=js), side by side in child processes on the
 * same model and tokens. Without --model, a small random BlackMamba (hubmoe init: 2 blocks, hidden 128, the released
 * models' 50304-token vocabulary) is made and converted, so that the vocabulary, not the model, dominates.
 *
 *   npm run build && node bench/perplexity.mjs [--model DIR] [--device cpu|cuda] [--tokens 4097] [--window 512] [--json FILE]
 */
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    model: { type: 'string' },
    device: { type: 'string', default: 'cpu' },
    tokens: { type: 'string', default: '4097' },
    window: { type: 'string', default: '512' },
    json: { type: 'string' },
    child: { type: 'boolean', default: false },
  },
});

if (values.child) {
  const { loadModel } = await import('../dist/runtime/model.js');
  const m = await loadModel(values.model, { device: values.device });
  const V = m.spec.vocab.size;
  const ids = Array.from({ length: Number(values.tokens) }, (_, i) => (i * 7919 + 13) % V);
  await m.perplexity(ids.slice(0, Number(values.window) + 1), { window: Number(values.window) }); // warm-up
  const t0 = performance.now();
  const r = await m.perplexity(ids, { window: Number(values.window) });
  const ms = performance.now() - t0;
  await m.dispose();
  console.log(JSON.stringify({ ms, perplexity: r.perplexity, tokens: r.tokens, vocab: m.spec.vocab.padded_size }));
  process.exit(0);
}

let dir = values.model;
let made;
if (!dir) {
  const { init } = await import('../dist/src/init.js');
  const { convert } = await import('../dist/src/convert.js');
  made = await mkdtemp(join(tmpdir(), 'hubmoe-ppl-bench-'));
  await init({ family: 'blackmamba', outDir: join(made, 'ckpt'), config: { num_layers: 2, hidden_size: 128, ffn_hidden_size: 256, mamba_moe_layers: ['r', '8'] }, seed: 1 });
  await convert(join(made, 'ckpt'), { outDir: join(made, 'onnx') });
  dir = join(made, 'onnx');
}
try {
  const me = fileURLToPath(import.meta.url);
  const side = (nll) =>
    JSON.parse(
      execFileSync(process.execPath, [me, '--child', '--model', dir, '--device', values.device, '--tokens', values.tokens, '--window', values.window], {
        env: { ...process.env, HUBMOE_NLL: nll },
        encoding: 'utf8',
      }),
    );
  const graph = side('graph');
  const js = side('js');
  const result = { device: values.device, tokens: graph.tokens, window: Number(values.window), vocab: graph.vocab, graph, js, speedup: js.ms / graph.ms };
  console.log(`perplexity over ${graph.tokens} tokens in windows of ${values.window}, vocabulary ${graph.vocab}, ${values.device}:`);
  console.log('| negative log-likelihoods | time | perplexity |');
  console.log('| --- | --- | --- |');
  console.log(`| ONNX Runtime (runtime/nll.ts, the default) | ${(graph.ms / 1000).toFixed(2)} s | ${graph.perplexity.toFixed(4)} |`);
  console.log(`| JavaScript (HUBMOE_NLL=js) | ${(js.ms / 1000).toFixed(2)} s | ${js.perplexity.toFixed(4)} |`);
  console.log(`speed-up ${result.speedup.toFixed(2)}x`);
  if (values.json) await writeFile(values.json, JSON.stringify(result, null, 2));
} finally {
  if (made) await rm(made, { recursive: true, force: true });
}
