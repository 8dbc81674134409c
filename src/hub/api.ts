/**
 * The Hub's read API, as hubmoe needs it: a revision resolved to its commit, the files of a commit
 * (with sizes, git oids and LFS sha256s), refs, and byte ranges of a file.
 *
 * Routes (models only): `GET /api/models/{repo}[/revision/{rev}]`, `GET /api/models/{repo}/tree/{rev}
 * ?recursive=true` paged by `Link: <…>; rel="next"`, `GET /api/models/{repo}/refs`, and
 * `GET /{repo}/resolve/{rev}/{path}`, which for LFS files redirects to a CDN.
 */
import { HubmoeError } from '../errors.js';
import type { HubHttp, HubResponse, RequestContext } from './http.js';

export interface RemoteFile {
  /** Path in the repo, `/`-separated. */
  path: string;
  /** Bytes of the file's content (for LFS files, of the object, not the pointer). */
  size: number;
  /** Git blob sha1 (for an LFS file: of its pointer). */
  oid: string;
  /** Set for files stored with LFS (or Xet, which also lists the sha256). */
  lfs?: { sha256: string; size: number };
}

export interface RepoInfo {
  id: string;
  /** The commit sha of the requested revision (the default branch when none). */
  sha: string;
  private: boolean;
  /** `false`, or the gating mode (`"auto"`, `"manual"`). */
  gated: boolean | string;
}

export interface GitRef {
  name: string;
  ref: string;
  targetCommit: string;
}

export interface RepoRefs {
  branches: GitRef[];
  tags: GitRef[];
}

export const COMMIT_SHA = /^[0-9a-f]{40}$/;

/** The name Python gives a file's blob in the cache: the LFS sha256, else the git blob sha1. */
export function blobEtag(file: RemoteFile): string {
  return file.lfs ? file.lfs.sha256 : file.oid;
}

export function encodeRevision(revision: string): string {
  return encodeURIComponent(revision);
}

export function encodePath(path: string): string {
  return path.split('/').map(encodeURIComponent).join('/');
}

/** Parses `Link: <url>; rel="next"`. */
export function nextLink(header: string | null): string | undefined {
  if (!header) return undefined;
  for (const part of header.split(',')) {
    const m = /<([^>]+)>\s*;\s*rel="?next"?/.exec(part);
    if (m) return m[1];
  }
  return undefined;
}

interface TreeEntry {
  type?: unknown;
  path?: unknown;
  size?: unknown;
  oid?: unknown;
  lfs?: { oid?: unknown; size?: unknown } | null;
}

function toRemoteFile(e: TreeEntry, label: string): RemoteFile | undefined {
  if (e.type !== 'file') return undefined;
  if (typeof e.path !== 'string' || typeof e.oid !== 'string' || typeof e.size !== 'number') {
    throw new HubmoeError('HUB_NETWORK', `${label}: the Hub listed a malformed file entry ${JSON.stringify(e)}`);
  }
  const file: RemoteFile = { path: e.path, size: e.size, oid: e.oid };
  if (e.lfs && typeof e.lfs.oid === 'string') {
    const size = typeof e.lfs.size === 'number' ? e.lfs.size : e.size;
    file.lfs = { sha256: e.lfs.oid, size };
    file.size = size;
  }
  return file;
}

export class HubApi {
  constructor(readonly http: HubHttp) {}

  get endpoint(): string {
    return this.http.endpoint;
  }

  /** Repo metadata at `revision` (default branch when omitted). */
  async repoInfo(repo: string, revision?: string): Promise<RepoInfo> {
    const path = revision === undefined ? `/api/models/${repo}` : `/api/models/${repo}/revision/${encodeRevision(revision)}`;
    const ctx: RequestContext = { what: `resolving ${repo}${revision ? `@${revision}` : ''}`, repo, revision };
    const { data } = await this.http.json<Record<string, unknown>>(this.http.url(path), {}, ctx);
    const sha = data.sha;
    if (typeof sha !== 'string' || !COMMIT_SHA.test(sha)) {
      throw new HubmoeError('HUB_NETWORK', `${ctx.what}: the Hub's answer has no commit sha`);
    }
    return {
      id: typeof data.id === 'string' ? data.id : repo,
      sha,
      private: data.private === true,
      gated: typeof data.gated === 'string' ? data.gated : data.gated === true,
    };
  }

  /** The commit sha a branch, tag or sha names. */
  async resolveRevision(repo: string, revision: string): Promise<string> {
    return (await this.repoInfo(repo, revision)).sha;
  }

  /** Every file of the repo at `revision`, recursively, following the listing's pages. */
  async listFiles(repo: string, revision: string): Promise<RemoteFile[]> {
    const ctx: RequestContext = { what: `listing the files of ${repo}@${revision}`, repo, revision };
    let url: string | undefined = this.http.url(`/api/models/${repo}/tree/${encodeRevision(revision)}`, {
      recursive: 'true',
      expand: 'false',
    });
    const files: RemoteFile[] = [];
    for (let page = 0; url; page++) {
      if (page > 10_000) throw new HubmoeError('HUB_NETWORK', `${ctx.what}: the listing does not end`);
      const { data, headers }: { data: unknown; headers: Headers } = await this.http.json<unknown>(url, {}, ctx);
      if (!Array.isArray(data)) throw new HubmoeError('HUB_NETWORK', `${ctx.what}: the Hub did not answer with a list`);
      for (const e of data as TreeEntry[]) {
        const f = toRemoteFile(e, ctx.what);
        if (f) files.push(f);
      }
      const next = nextLink(headers.get('link'));
      url = next ? new URL(next, url).toString() : undefined;
    }
    return files.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  }

  async listRefs(repo: string): Promise<RepoRefs> {
    const ctx: RequestContext = { what: `listing the branches of ${repo}`, repo };
    const { data } = await this.http.json<{ branches?: GitRef[]; tags?: GitRef[] }>(this.http.url(`/api/models/${repo}/refs`), {}, ctx);
    return { branches: data.branches ?? [], tags: data.tags ?? [] };
  }

  /** `{endpoint}/{repo}/resolve/{revision}/{path}`. */
  resolveUrl(repo: string, revision: string, path: string): string {
    return this.http.url(`/${repo}/resolve/${encodeRevision(revision)}/${encodePath(path)}`);
  }

  /**
   * GETs a file's bytes from `start` (to `end`, exclusive, when given). `url` may be a location a
   * previous call was redirected to; if it no longer answers (signed CDN URLs expire) the Hub's
   * resolve URL is asked again. Returns the response (status 200 or 206) and where it came from.
   */
  async getRange(
    repo: string,
    commit: string,
    path: string,
    start: number,
    end?: number,
    options: { url?: string; signal?: AbortSignal } = {},
  ): Promise<HubResponse> {
    const ctx: RequestContext = { what: `downloading ${path} from ${repo}`, repo, revision: commit, path };
    const headers: Record<string, string> = { 'accept-encoding': 'identity' };
    if (start > 0 || end !== undefined) headers.range = `bytes=${start}-${end !== undefined ? end - 1 : ''}`;
    if (options.url) {
      const r = await this.http.request(options.url, { headers, signal: options.signal }, ctx);
      if (r.res.ok) return r;
      await r.res.body?.cancel().catch(() => undefined);
    }
    const r = await this.http.request(this.resolveUrl(repo, commit, path), { headers, signal: options.signal }, ctx);
    if (r.res.ok) return r;
    throw await this.http.errorFrom(r, ctx);
  }
}
