/** Shared helpers for the hub tests: temp dirs, tiny safetensors files, captured logs and streams. */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { writeSafetensors } from '../../src/io/safetensors.js';
import type { WriteEntry } from '../../src/io/safetensors.js';
import type { HubOptionsInput } from '../../src/hub/env.js';
import type { Logger } from '../../src/hub/progress.js';
import type { HubServer } from './server.js';

export async function makeTempDir(prefix = 'hubmoe-hub-'): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** The bytes of a safetensors file holding `entries`. */
export async function safetensorsBytes(entries: WriteEntry[], metadata?: Record<string, string>): Promise<Buffer> {
  const { dir, cleanup } = await makeTempDir('hubmoe-st-');
  try {
    const p = join(dir, 'x.safetensors');
    await writeSafetensors(p, entries, metadata);
    return await readFile(p);
  } finally {
    await cleanup();
  }
}

/** An F32 tensor entry with values start, start+1, … */
export function f32Entry(name: string, shape: number[], start = 0): WriteEntry {
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = start + i;
  return { name, dtype: 'F32', shape, data: new Uint8Array(data.buffer) };
}

export interface CapturedLog extends Logger {
  lines: string[];
  text(): string;
}

export function captureLogger(): CapturedLog {
  const lines: string[] = [];
  return {
    lines,
    info: (m) => void lines.push(m),
    warn: (m) => void lines.push(`warning: ${m}`),
    text: () => lines.join('\n'),
  };
}

/** A writable stream that records what is written; `isTTY` as asked. */
export class CaptureStream extends Writable {
  chunks: string[] = [];
  isTTY: boolean;
  columns = 100;

  constructor(isTTY = true) {
    super();
    this.isTTY = isTTY;
  }

  override _write(chunk: Buffer | string, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.chunks.push(chunk.toString());
    cb();
  }

  text(): string {
    return this.chunks.join('');
  }
}

/** Hub options pointing at the emulator, isolated from the developer's environment. */
export function hubInput(server: HubServer, cacheDir: string, extra: HubOptionsInput = {}): HubOptionsInput {
  return { endpoint: server.url, cacheDir, env: {}, homeDir: cacheDir, progressStream: new CaptureStream(false), ...extra };
}
