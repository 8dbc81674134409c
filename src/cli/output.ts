/**
 * CLI output rules: stdout carries only the result; messages and progress go to stderr. Progress
 * bars draw only on a terminal and not when HF_HUB_DISABLE_PROGRESS_BARS is set; NO_COLOR disables
 * colour.
 */
import type { Logger } from '../log.js';

function truthy(v: string | undefined): boolean {
  return v !== undefined && ['1', 'on', 'yes', 'true'].includes(v.toLowerCase());
}

export function progressEnabled(): boolean {
  return Boolean(process.stderr.isTTY) && !truthy(process.env.HF_HUB_DISABLE_PROGRESS_BARS);
}

export function colour(code: number, text: string): string {
  if (process.env.NO_COLOR !== undefined || !process.stderr.isTTY) return text;
  return `\x1b[${code}m${text}\x1b[0m`;
}

function human(bytes: number): string {
  if (bytes >= 2 ** 30) return `${(bytes / 2 ** 30).toFixed(2)} GiB`;
  if (bytes >= 2 ** 20) return `${(bytes / 2 ** 20).toFixed(1)} MiB`;
  if (bytes >= 2 ** 10) return `${(bytes / 2 ** 10).toFixed(1)} KiB`;
  return `${bytes} B`;
}

export function stderrLogger(opts: { quiet?: boolean } = {}): Logger {
  const bars = progressEnabled();
  let drawn = false;
  let last = 0;
  const clear = (): void => {
    if (drawn) {
      process.stderr.write('\r\x1b[2K');
      drawn = false;
    }
  };
  return {
    info: (m) => {
      if (opts.quiet) return;
      clear();
      process.stderr.write(`${m}\n`);
    },
    warn: (m) => {
      clear();
      process.stderr.write(`${colour(33, 'warning:')} ${m}\n`);
    },
    progress: (label, done, total) => {
      if (!bars || opts.quiet) return;
      const now = Date.now();
      if (done < total && now - last < 100) return;
      last = now;
      const width = 30;
      const frac = total > 0 ? Math.min(1, done / total) : 1;
      const fill = Math.round(frac * width);
      process.stderr.write(`\r\x1b[2K${label} [${'#'.repeat(fill)}${'.'.repeat(width - fill)}] ${human(done)}/${human(total)}`);
      drawn = true;
      if (done >= total) clear();
    },
  };
}
