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
