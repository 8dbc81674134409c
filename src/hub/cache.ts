/**
 * The Hugging Face cache, laid out exactly as Python's `huggingface_hub` lays it out, so that both
 * share one copy of every file:
 *
 *     <cache>/CACHEDIR.TAG
 *     <cache>/models--{org}--{name}/
 *       blobs/{etag}                       the content: sha256 for LFS files, git blob sha1 otherwise
 *       blobs/{etag}.incomplete            a partial download, resumed by the next run
 *       snapshots/{commit}/{path}          relative symlink to ../../blobs/{etag} (one more ../ per folder)
 *       refs/{revision}                    the commit sha a branch or tag pointed to (no newline)
 *
 * Writes are atomic (temporary name, then rename), so a concurrent reader sees a file whole or not
 * at all; no locks are taken.
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { lstat, mkdir, readFile, readdir, readlink, rename, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { dirname, join, relative, sep } from 'node:path';
import { HubmoeError, fileError } from '../errors.js';
import { COMMIT_SHA } from './api.js';

export const CACHEDIR_TAG_CONTENT =
  'Signature: 8a477f597d28d172789f06886806bc55\n' +
  '# This file is a cache directory tag created by huggingface_hub.\n' +
  '# For information about cache directory tags, see:\n' +
  '#\thttps://bford.info/cachedir/\n';

/** `models--org--name`, Python's `repo_folder_name` for a model repo. */
export function repoFolderName(repo: string): string {
  return ['models', ...repo.split('/')].join('--');
}

/** A short random suffix for temporary names, unique per writer. */
export function tempSuffix(): string {
  return randomBytes(4).toString('hex');
}

function isInside(parent: string, child: string): boolean {
  const rel = relative(parent, child);
  return rel !== '' && !rel.startsWith('..') && !rel.startsWith(sep) && !rel.includes(`${sep}..${sep}`);
}

export class RepoCache {
  /** `<cache>/models--org--name`. */
  readonly dir: string;

  constructor(
    readonly cacheDir: string,
    readonly repo: string,
  ) {
    this.dir = join(cacheDir, repoFolderName(repo));
  }

  blobPath(etag: string): string {
    if (!/^[0-9a-f]{40}$|^[0-9a-f]{64}$/.test(etag)) {
      throw new HubmoeError('HUB_NETWORK', `${this.repo}: the Hub gave an unexpected content hash "${etag}"`);
    }
    return join(this.dir, 'blobs', etag);
  }

  snapshotDir(commit: string): string {
    return join(this.dir, 'snapshots', commit);
  }

  /** Where a file of a commit lives in the cache; refuses paths that would leave the snapshot. */
  pointerPath(commit: string, path: string): string {
    const snap = this.snapshotDir(commit);
    const p = join(snap, ...path.split('/'));
    if (!isInside(snap, p)) throw new HubmoeError('BAD_ARGUMENT', `${this.repo}: refusing the file path "${path}" (it leaves the snapshot folder)`);
    return p;
  }

  refPath(revision: string): string {
    const refs = join(this.dir, 'refs');
    const p = join(refs, ...revision.split('/'));
    if (!isInside(refs, p)) throw new HubmoeError('BAD_ARGUMENT', `${this.repo}: refusing the revision name "${revision}"`);
    return p;
  }

  async readRef(revision: string): Promise<string | undefined> {
    try {
      const sha = (await readFile(this.refPath(revision), 'utf-8')).trim();
      return COMMIT_SHA.test(sha) ? sha : undefined;
    } catch {
      return undefined;
    }
  }

  /** Records the commit a branch or tag names, as Python does (nothing when `revision` is the sha). */
  async writeRef(revision: string, commit: string): Promise<void> {
    if (revision === commit) return;
    const path = this.refPath(revision);
    if ((await this.readRef(revision)) === commit) return;
    try {
      await mkdir(dirname(path), { recursive: true });
      const tmp = `${path}.${tempSuffix()}.tmp`;
      await writeFile(tmp, commit);
      await rename(tmp, path);
    } catch (err) {
      throw fileError(path, err, 'write');
    }
  }

  /** Writes `CACHEDIR.TAG` at the cache root (as Python does) so backup tools skip the cache. */
  async ensureLayout(): Promise<void> {
    try {
      await mkdir(join(this.dir, 'blobs'), { recursive: true });
      const tag = join(this.cacheDir, 'CACHEDIR.TAG');
      if (!existsSync(tag)) await writeFile(tag, CACHEDIR_TAG_CONTENT).catch(() => undefined);
    } catch (err) {
      throw fileError(this.dir, err, 'create');
    }
  }

  /**
   * Points `snapshots/{commit}/{path}` at `blobs/{etag}` with a relative symlink. The link is made
   * under a temporary name and renamed over the final one, so readers never see it missing.
   */
  async linkSnapshot(commit: string, path: string, etag: string): Promise<string> {
    const pointer = this.pointerPath(commit, path);
    const blob = this.blobPath(etag);
    const target = relative(dirname(pointer), blob);
    try {
      const current = await readlink(pointer).catch(() => undefined);
      if (current === target) return pointer;
      await mkdir(dirname(pointer), { recursive: true });
      const tmp = `${pointer}.${tempSuffix()}.tmp`;
      await symlink(target, tmp);
      await rename(tmp, pointer);
    } catch (err) {
      throw fileError(pointer, err, 'link');
    }
    return pointer;
  }

  /** The snapshot path of a file when its content is in the cache (the link resolves). */
  async cachedFile(commit: string, path: string): Promise<string | undefined> {
    const pointer = this.pointerPath(commit, path);
    try {
      const s = await stat(pointer);
      return s.isFile() ? pointer : undefined;
    } catch {
      return undefined;
    }
  }

  async hasSnapshot(commit: string): Promise<boolean> {
    try {
      return (await stat(this.snapshotDir(commit))).isDirectory();
    } catch {
      return false;
    }
  }

  /** The files of a cached snapshot whose content is present, with their sizes. */
  async listSnapshot(commit: string): Promise<Array<{ path: string; size: number }>> {
    const root = this.snapshotDir(commit);
    const out: Array<{ path: string; size: number }> = [];
    const walk = async (rel: string): Promise<void> => {
      let entries;
      try {
        entries = await readdir(join(root, rel), { withFileTypes: true });
      } catch {
        return;
      }
      for (const e of entries) {
        const p = rel ? `${rel}/${e.name}` : e.name;
        if (e.name.endsWith('.tmp')) continue;
        if (e.isDirectory()) await walk(p);
        else {
          try {
            const s = await stat(join(root, p));
            if (s.isFile()) out.push({ path: p, size: s.size });
          } catch {
            // a dangling link: the blob was removed (e.g. by `hf cache prune`)
          }
        }
      }
    };
    await walk('');
    return out.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  }

  /**
   * The commit a revision names, from the cache alone: a sha with a snapshot folder, or a ref.
   * Throws HUB_OFFLINE saying to run once online when the cache cannot answer.
   */
  async resolveOffline(revision: string): Promise<string> {
    if (COMMIT_SHA.test(revision) && (await this.hasSnapshot(revision))) return revision;
    const ref = await this.readRef(revision);
    if (ref && (await this.hasSnapshot(ref))) return ref;
    throw new HubmoeError(
      'HUB_OFFLINE',
      `${this.repo}@${revision} is not in the cache at ${this.cacheDir} and offline mode is on (HF_HUB_OFFLINE): run once online (unset HF_HUB_OFFLINE) to download it`,
    );
  }

  /** Removes a file if present; errors other than absence are reported. */
  async remove(path: string): Promise<void> {
    try {
      await rm(path, { force: true });
    } catch (err) {
      throw fileError(path, err, 'remove');
    }
  }

  async exists(path: string): Promise<boolean> {
    try {
      await lstat(path);
      return true;
    } catch {
      return false;
    }
  }
}
