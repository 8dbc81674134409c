#!/usr/bin/env node
/**
 * What streaming text costs on top of generation: generateText() (token ids turned into text as they come, with
 * onText) against generate() (ids only), greedy, on the same prompt and model, for growing lengths. Default model:
 * the bundled Brown-corpus Jamba, converted to a temporary dir, on the CPU.
 *
 *   npm run build && node bench/stream-text.mjs [--model DIR] [--device cpu|cuda] [--tokens 200,800,2000] [--json FILE]
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { convert } from '../dist/src/convert.js';
import { loadModel } from '../dist/runtime/model.js';

const { values } = parseArgs({ options: { model: { type: 'string' }, device: { type: 'string', default: 'cpu' }, tokens: { type: 'string', default: '200,800,2000' }, json: { type: 'string' } } });
let dir = values.model;
let made;
if (!dir) {
  made = await mkdtemp(join(tmpdir(), 'hubmoe-stream-bench-'));
  dir = join(made, 'm');
  await convert(new URL('../fixtures/brown/jamba/checkpoint', import.meta.url).pathname, { outDir: dir });
}
try {
  const m = await loadModel(dir, { device: values.device });
  const prompt = 'The jury said';
  await m.generateText(prompt, { maxNewTokens: 8, ignoreEos: true }); // warm-up
  const rows = [];
  console.log('| new tokens | generate() | generateText() with onText | ratio |');
  console.log('| --- | --- | --- | --- |');
  for (const n of values.tokens.split(',').map(Number)) {
    let t0 = performance.now();
    await m.generate([m.tokenizer.encode(prompt)], { maxNewTokens: n, ignoreEos: true });
    const ids = performance.now() - t0;
    let chars = 0;
    t0 = performance.now();
    await m.generateText(prompt, { maxNewTokens: n, ignoreEos: true, onText: (_, t) => void (chars += t.length) });
    const text = performance.now() - t0;
    rows.push({ tokens: n, generateMs: ids, generateTextMs: text, ratio: text / ids, chars });
    console.log(`| ${n} | ${ids.toFixed(0)} ms | ${text.toFixed(0)} ms | ${(text / ids).toFixed(2)} |`);
  }
  await m.dispose();
  if (values.json) await writeFile(values.json, JSON.stringify(rows, null, 2));
} finally {
  if (made) await rm(made, { recursive: true, force: true });
}
