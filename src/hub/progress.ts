/**
 * Progress bars and log lines for Hub transfers. Everything goes to stderr (stdout carries only a
 * command's result): one bar per file, redrawn in place on a terminal, and nothing at all when
 * bars are disabled (not a terminal, `HF_HUB_DISABLE_PROGRESS_BARS`, or `progress: false`).
 */

export type { Logger } from '../log.js';
export { silentLogger, stderrLogger } from '../log.js';

export interface ProgressBar {
  /** Adds `bytes` to the count. */
  tick(bytes: number): void;
  /** Sets the count (e.g. back to 0 when a download restarts). */
  set(bytes: number): void;
  /** Draws the final state and ends the line. */
  done(): void;
  /** Ends the line without claiming completion. */
  fail(): void;
}

export interface ProgressReporter {
  readonly enabled: boolean;
  /** Starts a bar for one file: `label` (a path), `total` bytes, `initial` bytes already there. */
  start(label: string, total: number, initial?: number): ProgressBar;
}

const NOOP_BAR: ProgressBar = { tick: () => undefined, set: () => undefined, done: () => undefined, fail: () => undefined };

export const noProgress: ProgressReporter = { enabled: false, start: () => NOOP_BAR };

export interface ProgressOptions {
  enabled: boolean;
  stream?: NodeJS.WritableStream;
  color?: boolean;
  /** Minimum milliseconds between redraws. */
  intervalMs?: number;
  now?: () => number;
}

export function formatBytes(n: number): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let v = n;
  let u = 0;
  while (v >= 1000 && u < units.length - 1) {
    v /= 1000;
    u++;
  }
  return u === 0 ? `${v} B` : `${v.toFixed(v >= 100 ? 0 : v >= 10 ? 1 : 2)} ${units[u]}`;
}

function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '--:--';
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const r = s % 60;
  const mm = String(m).padStart(2, '0');
  const ss = String(r).padStart(2, '0');
  return h > 0 ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
}

class TerminalBar implements ProgressBar {
  private count: number;
  private lastDraw = 0;
  private readonly started: number;
  private readonly initial: number;
  private finished = false;

  constructor(
    private readonly opts: Required<Omit<ProgressOptions, 'enabled'>>,
    private readonly label: string,
    private readonly total: number,
    initial: number,
  ) {
    this.count = initial;
    this.initial = initial;
    this.started = opts.now();
    this.draw(true);
  }

  tick(bytes: number): void {
    this.count += bytes;
    this.draw(false);
  }

  set(bytes: number): void {
    this.count = bytes;
    this.draw(true);
  }

  done(): void {
    if (this.finished) return;
    this.count = Math.max(this.count, this.total);
    this.draw(true);
    this.finished = true;
    this.opts.stream.write('\n');
  }

  fail(): void {
    if (this.finished) return;
    this.draw(true);
    this.finished = true;
    this.opts.stream.write('\n');
  }

  private draw(force: boolean): void {
    if (this.finished) return;
    const now = this.opts.now();
    if (!force && now - this.lastDraw < this.opts.intervalMs) return;
    this.lastDraw = now;
    const columns = (this.opts.stream as { columns?: number }).columns ?? 80;
    const fraction = this.total > 0 ? Math.min(1, this.count / this.total) : 1;
    const pct = `${Math.floor(fraction * 100)}%`.padStart(4);
    const elapsed = (now - this.started) / 1000;
    const rate = elapsed > 0 ? (this.count - this.initial) / elapsed : 0;
    const eta = rate > 0 ? (this.total - this.count) / rate : Number.NaN;
    const stats = `${formatBytes(this.count)}/${formatBytes(this.total)} ${formatBytes(Math.round(rate))}/s ${formatDuration(eta)}`;
    const name = this.label.length > 40 ? `…${this.label.slice(-39)}` : this.label;
    const width = Math.max(10, Math.min(40, columns - name.length - stats.length - 10));
    const filled = Math.round(fraction * width);
    let bar = '█'.repeat(filled) + '░'.repeat(width - filled);
    if (this.opts.color) bar = `\x1b[36m${bar}\x1b[0m`;
    this.opts.stream.write(`\r${name} ${pct} ${bar} ${stats}\x1b[K`);
  }
}

/** One bar per file on `stream` (stderr by default), or nothing when disabled. */
export function createProgress(options: ProgressOptions): ProgressReporter {
  if (!options.enabled) return noProgress;
  const opts = {
    stream: options.stream ?? process.stderr,
    color: options.color ?? false,
    intervalMs: options.intervalMs ?? 100,
    now: options.now ?? Date.now,
  };
  return { enabled: true, start: (label, total, initial = 0) => new TerminalBar(opts, label, total, initial) };
}
