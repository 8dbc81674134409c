export interface ExampleServer {
  /** Base URL, ending in '/'. */
  url: string;
  /** Every request: path and status. */
  log: Array<{ path: string; status: number }>;
  close(): Promise<void>;
}

export function startExampleServer(options?: {
  models?: Record<string, string>;
  plugin?: 'dist' | 'src';
  host?: string;
  port?: number;
  root?: string;
}): Promise<ExampleServer>;
