/**
 * CLI output rules: stdout carries only the result; messages and progress go to stderr. Progress
 * bars (one per file, src/hub/progress.ts) draw only on a terminal and not when
 * HF_HUB_DISABLE_PROGRESS_BARS is set; NO_COLOR disables colour.
 */
import { createProgress } from '../hub/progress.js';
import type { ProgressBar } from '../hub/progress.js';
import { stderrLogger } from '../log.js';
import type { Logger } from '../log.js';

function truthy(v: string | undefined): boolean {
  return v !== undefined && ['1', 'on', 'yes', 'true'].includes(v.toLowerCase());
}

export function progressEnabled(): boolean {
  return Boolean(process.stderr.isTTY) && !truthy(process.env.HF_HUB_DISABLE_PROGRESS_BARS);
}

function colourEnabled(): boolean {
  return process.env.NO_COLOR === undefined && Boolean(process.stderr.isTTY);
}

export function colour(code: number, text: string): string {
  return colourEnabled() ? `\x1b[${code}m${text}\x1b[0m` : text;
}

/** The CLI's logger: lines and progress bars on stderr; `quiet` keeps only warnings. */
export function cliLogger(opts: { quiet?: boolean } = {}): Logger {
  const base = stderrLogger(process.stderr, { color: colourEnabled() });
  const reporter = createProgress({ enabled: progressEnabled() && !opts.quiet, stream: process.stderr, color: colourEnabled() });
  const bars = new Map<string, ProgressBar>();
  return {
    info: (m) => {
      if (!opts.quiet) base.info(m);
    },
    warn: base.warn,
    progress: (label, done, total) => {
      if (!reporter.enabled) return;
      let bar = bars.get(label);
      if (!bar) {
        bar = reporter.start(label, total);
        bars.set(label, bar);
      }
      bar.set(done);
      if (done >= total) {
        bar.done();
        bars.delete(label);
      }
    },
  };
}
