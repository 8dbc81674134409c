#!/usr/bin/env node
/**
 * How far the tanh-approximated GELU of ONNX Runtime's MoE operator would be from BlackMamba's
 * reference (erf GELU): converts the BlackMamba fixtures with their own erf experts and with
 * --expert-act gelu_tanh, and prints the max relative logits error against the reference.
 *
 *   npm run build && node bench/expert-gelu-error.mjs
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { convert } from '../dist/src/convert.js';
import { loadModel } from '../dist/runtime/model.js';
import { SafetensorsFile } from '../dist/src/io/safetensors.js';
import { toFloat32, toIntArray } from '../dist/src/io/dtype.js';

const root = new URL('..', import.meta.url).pathname;
const dir = await mkdtemp(join(tmpdir(), 'hubmoe-gelu-'));
console.log('| fixture | expert activation | lowering | max rel. logits error |');
console.log('| --- | --- | --- | --- |');
for (const name of ['blackmamba-plain', 'blackmamba-glu-bias']) {
  const ref = await SafetensorsFile.open(join(root, 'fixtures', name, 'reference.safetensors'));
  const ids = toIntArray('I64', await ref.readBytes('input_ids'));
  const T = ref.entry('input_ids').shape[1];
  const rows = [ids.slice(0, T), ids.slice(T)];
  const want = toFloat32('F32', await ref.readBytes('logits'));
  for (const act of ['gelu_erf', 'gelu_tanh']) {
    const out = join(dir, `${name}-${act}`);
    const res = await convert(join(root, 'fixtures', name, 'checkpoint'), { outDir: out, expertAct: act });
    const moe = res.plan.blocks.find((b) => b.kind === 'moe');
    const m = await loadModel(out);
    const got = await m.forward(rows);
    await m.dispose();
    let d = 0, s = 0;
    for (let i = 0; i < want.length; i++) {
      d = Math.max(d, Math.abs(got.data[i] - want[i]));
      s = Math.max(s, Math.abs(want[i]));
    }
    console.log(`| ${name} | ${act} | ${/\((\w+) lowering\)/.exec(moe.detail)[1]} | ${(d / s).toExponential(2)} |`);
  }
  await ref.close();
}
await rm(dir, { recursive: true, force: true });
