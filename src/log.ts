/**
 * Where library code reports what it is doing. The library never writes to stdout; the CLI passes
 * a logger that writes to stderr, and library users may pass their own or none.
 */
export interface Logger {
  info(message: string): void;
  warn(message: string): void;
  /** Progress of a long step: `done` of `total` units (bytes, tokens) for `label`. */
  progress?(label: string, done: number, total: number): void;
}

export const silentLogger: Logger = {
  info: () => undefined,
  warn: () => undefined,
};

/** Lines on stderr (or the given stream); warnings prefixed, in yellow when `color`. */
export function stderrLogger(stream: NodeJS.WritableStream = process.stderr, options: { color?: boolean } = {}): Logger {
  const color = options.color ?? false;
  return {
    info: (message) => void stream.write(`${message}\n`),
    warn: (message) => void stream.write(color ? `\x1b[33mwarning:\x1b[0m ${message}\n` : `warning: ${message}\n`),
  };
}
