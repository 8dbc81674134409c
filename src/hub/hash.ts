/**
 * The two content hashes the Hub uses: sha256 (the oid of an LFS object) and the git blob sha1
 * (`sha1("blob <size>\0" + content)`, the oid of a regular file). Files are hashed as streams, so
 * a multi-gigabyte shard never sits in memory.
 */
import { createHash } from 'node:crypto';
import type { Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { fileError } from '../errors.js';

export interface FileHashes {
  size: number;
  sha256: string;
  /** Git blob sha1 of the content (computed when asked for). */
  gitSha1?: string;
}

export function gitBlobHasher(size: number): Hash {
  return createHash('sha1').update(`blob ${size}\0`);
}

export function gitBlobSha1(content: Uint8Array): string {
  return gitBlobHasher(content.byteLength).update(content).digest('hex');
}

export function sha256Hex(content: Uint8Array | string): string {
  return createHash('sha256').update(content).digest('hex');
}

/** The git oid of the LFS pointer file the Hub stores for an object (what a tree listing shows). */
export function lfsPointer(sha256: string, size: number): string {
  return `version https://git-lfs.github.com/spec/v1\noid sha256:${sha256}\nsize ${size}\n`;
}

export interface HashFileOptions {
  /** Also compute the git blob sha1 (only useful for files small enough to be stored without LFS). */
  gitSha1?: boolean;
  /** Told of each chunk (for a progress bar). */
  onBytes?: (n: number) => void;
}

/** Hashes a file on disk as a stream. */
export async function hashFile(path: string, options: HashFileOptions = {}): Promise<FileHashes> {
  const { onBytes } = options;
  let size: number;
  try {
    size = (await stat(path)).size;
  } catch (err) {
    throw fileError(path, err, 'hash');
  }
  const sha256 = createHash('sha256');
  const sha1 = options.gitSha1 ? gitBlobHasher(size) : undefined;
  let seen = 0;
  try {
    for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) {
      const buf = chunk as Buffer;
      sha256.update(buf);
      sha1?.update(buf);
      seen += buf.length;
      onBytes?.(buf.length);
    }
  } catch (err) {
    throw fileError(path, err, 'hash');
  }
  if (seen !== size) throw fileError(path, new Error(`changed while being hashed (${size} → ${seen} bytes)`), 'hash');
  return { size, sha256: sha256.digest('hex'), ...(sha1 ? { gitSha1: sha1.digest('hex') } : {}) };
}
