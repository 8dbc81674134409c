#!/usr/bin/env node
/**
 * Converts a checkpoint to the fused target with SCAP thresholds from bench/scap_period.py (one JSON per
 * sparsity), so that bench/speed.mjs can time the fused sparse operators against the dense fused model.
 *
 *   npm run build && node bench/scap-speed.mjs --checkpoint CKPT --scap scap-0.5.json --out DIR [--dtype fp16]
 *
 * The pruned layers become ai.hubmoe SparseLinear nodes (Mamba in/out_proj, attention, dense MLPs) and the MoE
 * op's fc1_scap / fc2_scap inputs (experts); modes are 0 (thresholds only), so no bias changes.
 */
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { openSource, writeModelDir } from '../dist/src/convert.js';

const { values } = parseArgs({
  options: { checkpoint: { type: 'string' }, scap: { type: 'string' }, out: { type: 'string' }, dtype: { type: 'string', default: 'fp16' } },
});
if (!values.checkpoint || !values.scap || !values.out) {
  process.stderr.write('usage: node bench/scap-speed.mjs --checkpoint CKPT --scap FILE --out DIR [--dtype fp16]\n');
  process.exit(2);
}
const cal = JSON.parse(await readFile(values.scap, 'utf-8'));
const t0 = performance.now();
const opened = await openSource(values.checkpoint);
try {
  const sites = {};
  for (const [site, v] of Object.entries(cal.sites)) {
    sites[site] = { type: v.type, target: cal.sparsity, mode: 0, threshold: v.threshold, bias: [], calibration_sparsity: v.calibration_sparsity, calibration_values: v.values };
  }
  opened.spec.scap = {
    method: 'teal',
    mode_centering: 'off',
    sparsity: String(cal.sparsity),
    calibration: { file: `random token ids, seed ${cal.seed} (bench/scap_period.py)`, sha256: '', tokens: cal.tokens, window: 256 },
    sites,
  };
  await writeModelDir(opened, values.out, { dtype: values.dtype, target: 'fused', overwrite: true, log: { info: () => {}, warn: (m) => process.stderr.write(`warning: ${m}\n`) } });
} finally {
  await opened.close();
}
process.stderr.write(`${values.out}: fused ${values.dtype}, ${Object.keys(cal.sites).length} pruned inputs at ${cal.sparsity}, converted in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
