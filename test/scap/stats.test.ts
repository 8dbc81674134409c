/**
 * SCAP's calibration statistics against NumPy and SciPy (fixtures/scap/stats.json, written by
 * fixtures/scripts/make_scap_stats.py): quantiles of |x − m|, the lower median, and the KDE peak.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { absShifted, kdeMode, median, modeCandidates, pruningError, quantile } from '../../src/scap/stats.js';
import { fixture } from '../helpers.js';

interface Sample {
  values: number[];
  median: number;
  kde_mode: number;
  kde_grid_step: number;
  quantiles: { '0': number[]; median: number[] };
}
const ref = JSON.parse(readFileSync(fixture('scap', 'stats.json'), 'utf-8')) as { quantiles_q: number[]; samples: Record<string, Sample> };

describe('SCAP statistics equal NumPy/SciPy', () => {
  for (const [name, s] of Object.entries(ref.samples)) {
    const x = Float32Array.from(s.values);
    it(`${name}: lower median`, () => {
      expect(median(x)).toBe(s.median);
    });
    it(`${name}: quantiles of |x| and |x − median| (linear interpolation)`, () => {
      ref.quantiles_q.forEach((q, i) => {
        expect(quantile(absShifted(x, 0), q)).toBeCloseTo(s.quantiles['0'][i]!, 12);
        expect(quantile(absShifted(x, s.median), q)).toBeCloseTo(s.quantiles.median[i]!, 12);
      });
    });
    it(`${name}: KDE peak (0.5 × Scott, 2000-point grid) within two grid steps of scipy's`, () => {
      expect(Math.abs(kdeMode(x) - s.kde_mode)).toBeLessThanOrEqual(2 * s.kde_grid_step);
    });
  }

  it('the mode candidates are 0, the median and the KDE peaks, without repeats', () => {
    const s = ref.samples.gelu!;
    const c = modeCandidates(Float32Array.from(s.values));
    expect(c[0]).toBe(0);
    expect(c[1]).toBe(s.median);
    expect(new Set(c).size).toBe(c.length);
    expect(c.some((m) => Math.abs(m - s.kde_mode) <= 2 * s.kde_grid_step)).toBe(true);
  });
});

describe('pruning error', () => {
  // x: 2 rows × 3 inputs; W: 2 outputs × 3 inputs.
  const x = Float32Array.of(0.1, -2, 0.5, 1, 0.05, -0.2);
  const w = Float32Array.of(1, 0, 2, -1, 3, 0.5);
  it('is 0 when nothing is pruned (t < 0)', () => {
    expect(pruningError(x, 2, w, 2, 0, -1)).toBe(0);
    expect(pruningError(x, 2, w, 2, 0.3, -1)).toBe(0);
  });
  it('is ‖R·Wᵀ‖² of the pruned-away residual R', () => {
    // t = 0.3, m = 0: R = [[0.1, 0, 0], [0, 0.05, -0.2]]; R·Wᵀ = [[0.1, -0.1], [-0.4, 0.05]].
    expect(pruningError(x, 2, w, 2, 0, 0.3)).toBeCloseTo(0.01 + 0.01 + 0.16 + 0.0025, 6);
  });
});
