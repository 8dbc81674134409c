/**
 * hubmoe's custom-op library (runtime/native/ops): its C++ tests — the CPU kernels against
 * double-precision references (SelectiveScan and MoE in every routing, activation and GLU variant,
 * fp32 and fp16), and the library loaded into onnxruntime-node's own ONNX Runtime. CI builds it with
 * `npm run build:native`; the fused-target parity tests (test/parity/native.test.ts) run it on the
 * reference fixtures.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT } from '../helpers.js';

describe('custom-op library C++ tests', () => {
  it('CPU kernels match the references, and the library works inside ONNX Runtime', () => {
    const r = spawnSync('bash', [join(ROOT, 'runtime', 'native', 'scripts', 'test-ops.sh')], { encoding: 'utf-8', timeout: 600_000 });
    const out = `${r.stdout}\n${r.stderr}`;
    expect(r.status, out.slice(-3000)).toBe(0);
    const results = [...out.matchAll(/ok: (\d+) passed, (\d+) failed/g)].map((m) => [Number(m[1]), Number(m[2])]);
    expect(results).toHaveLength(2);
    for (const [passed, failed] of results) {
      expect(failed).toBe(0);
      expect(passed).toBeGreaterThan(20);
    }
  });
});
