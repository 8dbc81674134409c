/**
 * Every failure hubmoe reports to a user is a HubmoeError: a stable `code` for programs and a
 * message that names the file, tensor, option or repo at fault and what to do about it.
 */
export type HubmoeErrorCode =
  | 'BAD_ARGUMENT'
  | 'NOT_FOUND'
  | 'BAD_CONFIG'
  | 'UNSUPPORTED'
  | 'CORRUPT_FILE'
  | 'MISSING_TENSOR'
  | 'BAD_SHAPE'
  | 'UNSAFE_PICKLE'
  | 'BAD_SPEC'
  | 'BAD_TOKEN_ID'
  | 'RUNTIME'
  | 'HUB_AUTH'
  | 'HUB_GATED'
  | 'HUB_NOT_FOUND'
  | 'HUB_NETWORK'
  | 'HUB_CHECKSUM'
  | 'HUB_OFFLINE'
  | 'NATIVE';

export class HubmoeError extends Error {
  readonly code: HubmoeErrorCode;

  constructor(code: HubmoeErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'HubmoeError';
    this.code = code;
  }
}

export function isHubmoeError(err: unknown): err is HubmoeError {
  return err instanceof HubmoeError;
}

/** Wraps a Node file-system error into a HubmoeError naming the path. */
export function fileError(path: string, err: unknown, what = 'read'): HubmoeError {
  const code = (err as NodeJS.ErrnoException)?.code;
  if (code === 'ENOENT') return new HubmoeError('NOT_FOUND', `${path}: no such file or directory`, { cause: err });
  if (code === 'EACCES') return new HubmoeError('BAD_ARGUMENT', `${path}: permission denied`, { cause: err });
  const detail = err instanceof Error ? err.message : String(err);
  return new HubmoeError('CORRUPT_FILE', `${path}: could not ${what} (${detail})`, { cause: err });
}
