/**
 * The statistics SCAP calibrates with (research/scap.md §1.3-1.4): the exact quantile of |x − m| for
 * the threshold (NumPy's default linear interpolation, in float64), and the mode m: 0, the median, or
 * the peak of a Gaussian kernel density estimate (bandwidth 0.5 × Scott's rule, 2000 grid points over
 * the data range), chosen by how little the pruned layer's output moves.
 */

/** NumPy's `quantile(values, q)` with linear interpolation; sorts a float64 copy. */
export function quantile(values: Float32Array | Float64Array, q: number): number {
  if (values.length === 0) return 0;
  const sorted = Float64Array.from(values).sort();
  const pos = q * (sorted.length - 1);
  const lo = Math.floor(pos);
  const hi = Math.min(sorted.length - 1, lo + 1);
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (pos - lo);
}

/** |x − m| of every value, as float64. */
export function absShifted(values: Float32Array, mode: number): Float64Array {
  const out = new Float64Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = Math.abs(values[i]! - mode);
  return out;
}

/** The lower median (torch.median's convention for an even count). */
export function median(values: Float32Array): number {
  if (values.length === 0) return 0;
  const sorted = Float64Array.from(values).sort();
  return sorted[Math.floor((sorted.length - 1) / 2)]!;
}

/**
 * Peak of a Gaussian KDE of `values` (every `stride`-th value, as SCAP subsamples), evaluated on
 * `grid` points spanning the data: the values are binned on the grid, then the bins are convolved
 * with the kernel (exact up to the binning).
 */
export function kdeMode(values: Float32Array, stride = 1, grid = 2000): number {
  const n = Math.ceil(values.length / stride);
  if (n === 0) return 0;
  let min = Infinity;
  let max = -Infinity;
  let sum = 0;
  let sq = 0;
  for (let i = 0; i < values.length; i += stride) {
    const v = values[i]!;
    min = Math.min(min, v);
    max = Math.max(max, v);
    sum += v;
    sq += v * v;
  }
  if (max === min) return min;
  const mean = sum / n;
  const sd = Math.sqrt(Math.max(0, sq / n - mean * mean));
  const h = 0.5 * sd * n ** (-1 / 5);
  const step = (max - min) / (grid - 1);
  const bins = new Float64Array(grid);
  for (let i = 0; i < values.length; i += stride) bins[Math.round((values[i]! - min) / step)]! += 1;
  const radius = Math.max(1, Math.ceil((4 * h) / step));
  const kernel = Float64Array.from({ length: 2 * radius + 1 }, (_, k) => Math.exp(-0.5 * (((k - radius) * step) / h) ** 2));
  let best = 0;
  let bestDensity = -1;
  for (let g = 0; g < grid; g++) {
    let d = 0;
    for (let k = -radius; k <= radius; k++) {
      const b = g + k;
      if (b >= 0 && b < grid) d += bins[b]! * kernel[k + radius]!;
    }
    if (d > bestDensity) {
      bestDensity = d;
      best = g;
    }
  }
  return min + best * step;
}

/**
 * The mode candidates SCAP compares: 0, the median, and the KDE peaks of three strided subsamples
 * of about 100k, 200k and 300k values.
 */
export function modeCandidates(values: Float32Array): number[] {
  const out = [0, median(values)];
  for (const k of [100_000, 200_000, 300_000]) out.push(kdeMode(values, Math.max(1, Math.floor(values.length / k))));
  return [...new Set(out)];
}

/**
 * ‖(x − m − S_t(x − m)) · Wᵀ‖² summed over `rows` sampled rows: how far the pruned layer's output is
 * from the dense one (the pruned-away residual through the weights). `weight` is [out, in], `x` is
 * [rows, in].
 */
export function pruningError(x: Float32Array, rows: number, weight: Float32Array, out: number, mode: number, threshold: number): number {
  const cols = x.length / rows;
  const residual = new Float64Array(cols);
  let total = 0;
  for (let r = 0; r < rows; r++) {
    let any = false;
    for (let c = 0; c < cols; c++) {
      const v = x[r * cols + c]! - mode;
      residual[c] = Math.abs(v) <= threshold ? v : 0;
      if (residual[c] !== 0) any = true;
    }
    if (!any) continue;
    for (let o = 0; o < out; o++) {
      let s = 0;
      const base = o * cols;
      for (let c = 0; c < cols; c++) s += residual[c]! * weight[base + c]!;
      total += s * s;
    }
  }
  return total;
}
