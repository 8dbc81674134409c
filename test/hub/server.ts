/**
 * A Hugging Face Hub emulator for tests: node:http on 127.0.0.1, an in-memory git-like repo store,
 * and a second server playing the CDN / S3 that LFS downloads are redirected to and LFS uploads are
 * PUT to. It answers the routes huggingface_hub and @huggingface/hub call, with the real Hub's
 * status codes, `X-Error-Code` / `X-Error-Message` headers and JSON error bodies:
 *
 *   GET  /api/whoami-v2
 *   GET  /api/models/{repo}[/revision/{rev}]          model info with `sha`
 *   GET  /api/models/{repo}/tree/{rev}[/{path}]       recursive listing, paged with Link rel="next"
 *   POST /api/models/{repo}/paths-info/{rev}
 *   GET  /api/models/{repo}/refs
 *   POST /api/models/{repo}/branch/{branch}
 *   POST /api/repos/create
 *   POST /api/models/{repo}/preupload/{rev}
 *   POST /api/models/{repo}/commit/{rev}[?create_pr=1]  ndjson
 *   POST /{repo}.git/info/lfs/objects/batch            basic, or multipart above a size
 *   POST /api/complete_multipart/{oid}, /{repo}.git/info/lfs/objects/verify
 *   HEAD|GET /{repo}/resolve/{rev}/{path}              Range → 206; LFS files 302 to the CDN
 *   CDN: GET /lfs/{sha256}, PUT /upload/{oid}, PUT /upload/{oid}/part/{n}
 *
 * Like the real Hub, a missing or private repo answers 401 to an anonymous request and 404 to an
 * authenticated one; a gated repo lists its files but answers 401/403 GatedRepo to downloads
 * without access; an unknown token gets 401 "Invalid credentials in Authorization header".
 *
 * Faults for tests: a connection destroyed after N bytes of a file, one that stalls, a corrupted
 * body, a server that ignores Range, and error statuses; every request is recorded.
 */
import { createHash } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface EmuFile {
  content: Buffer;
  lfs: boolean;
  sha256: string;
  /** Git blob sha1 of the content, or of the LFS pointer for LFS files. */
  oid: string;
}

interface Commit {
  sha: string;
  parent?: string;
  summary: string;
  files: Map<string, EmuFile>;
}

export interface EmuRepo {
  id: string;
  private: boolean;
  gated: false | 'auto' | 'manual';
  /** Users granted access to a gated repo. */
  gatedAllowed: Set<string>;
  branches: Map<string, string>;
  tags: Map<string, string>;
  prs: Map<number, string>;
  commits: Map<string, Commit>;
}

export interface TokenInfo {
  user: string;
  role: 'read' | 'write';
  orgs?: string[];
}

export interface FaultMatch {
  /** A file path in the repo, or an LFS sha256. */
  match: string;
  /** How many requests it applies to (default 1). */
  times?: number;
}

export interface Faults {
  /** Sends `bytes` bytes of the body, then destroys the connection. */
  dropAfter?: FaultMatch & { bytes: number };
  /** Sends `bytes` bytes of the body, then nothing more while keeping the connection open. */
  stallAfter?: FaultMatch & { bytes: number };
  /** Flips a byte in the body. */
  corrupt?: FaultMatch;
  /** Answers 200 with the whole file to ranged GETs. */
  ignoreRange?: boolean;
  /** Answers this status to downloads of the file. */
  status?: FaultMatch & { status: number };
}

export interface RequestRecord {
  server: 'hub' | 'cdn';
  method: string;
  /** Path and query, as received. */
  url: string;
  range?: string;
  authorization?: string;
  status: number;
  /** Body bytes sent (for file downloads). */
  bytes: number;
}

export interface HubServerOptions {
  tokens?: Record<string, TokenInfo>;
  /** Entries per page of the tree listing (default 1000). */
  pageSize?: number;
  /** LFS objects above this size are uploaded in parts (default: never). */
  multipartThreshold?: number;
  /** Part size for multipart uploads (default 5 MiB). */
  multipartChunkSize?: number;
  /** Add a `verify` action to LFS batch answers. */
  verifyAction?: boolean;
}

export interface AddRepoOptions {
  private?: boolean;
  gated?: false | 'auto' | 'manual';
  gatedAllowed?: string[];
  /** Paths stored through LFS (default: decided like the Hub: by extension, size, binary sample). */
  lfs?: (path: string, content: Buffer) => boolean;
  summary?: string;
}

export interface HubServer {
  url: string;
  cdnUrl: string;
  repos: Map<string, EmuRepo>;
  lfsObjects: Map<string, Buffer>;
  faults: Faults;
  requests: RequestRecord[];
  options: Required<Omit<HubServerOptions, 'tokens'>> & { tokens: Record<string, TokenInfo> };
  /** Creates a repo with one commit on main holding `files`; returns the commit sha. */
  addRepo(id: string, files: Record<string, string | Uint8Array>, opts?: AddRepoOptions): string;
  /** Commits `files` (added or replaced; `null` deletes) on a branch; returns the new sha. */
  commitFiles(id: string, branch: string, files: Record<string, string | Uint8Array | null>, opts?: AddRepoOptions): string;
  /** The files of a repo at a revision (branch, tag, sha, refs/pr/N). */
  filesAt(id: string, revision: string): Map<string, EmuFile>;
  tag(id: string, tag: string, revision: string): void;
  clearRequests(): void;
  close(): Promise<void>;
}

export const DEFAULT_TOKENS: Record<string, TokenInfo> = {
  hf_write_alice: { user: 'alice', role: 'write', orgs: ['hubmoe-org'] },
  hf_read_bob: { user: 'bob', role: 'read' },
  hf_write_carol: { user: 'carol', role: 'write' },
};

const GITATTRIBUTES = [
  '*.bin filter=lfs diff=lfs merge=lfs -text',
  '*.onnx filter=lfs diff=lfs merge=lfs -text',
  '*.safetensors filter=lfs diff=lfs merge=lfs -text',
  '*.pt filter=lfs diff=lfs merge=lfs -text',
  '*.model filter=lfs diff=lfs merge=lfs -text',
  '',
].join('\n');

const LFS_EXT = /\.(bin|onnx|onnx_data|safetensors|pt|pth|model|gguf|h5|msgpack|npy|npz|zip|gz)$/i;

function sha256(b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex');
}

function gitOid(b: Uint8Array): string {
  return createHash('sha1').update(`blob ${b.byteLength}\0`).update(b).digest('hex');
}

function pointer(sha: string, size: number): string {
  return `version https://git-lfs.github.com/spec/v1\noid sha256:${sha}\nsize ${size}\n`;
}

export function hubLfsRule(path: string, content: Uint8Array): boolean {
  return LFS_EXT.test(path) || content.byteLength > 10 * 1024 * 1024 || content.subarray(0, 512).includes(0);
}

function makeFile(content: Buffer, lfs: boolean): EmuFile {
  const sha = sha256(content);
  return { content, lfs, sha256: sha, oid: lfs ? gitOid(Buffer.from(pointer(sha, content.byteLength))) : gitOid(content) };
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly errorCode?: string,
  ) {
    super(message);
  }
}

function readBody(req: http.IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

function parseRange(header: string | undefined, size: number): { start: number; end: number } | 'invalid' | undefined {
  if (!header) return undefined;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m) return 'invalid';
  let start: number;
  let end: number;
  if (m[1] === '') {
    const suffix = Number(m[2]);
    start = Math.max(0, size - suffix);
    end = size - 1;
  } else {
    start = Number(m[1]);
    end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
  }
  if (start >= size || start > end) return 'invalid';
  return { start, end };
}

export async function startHubServer(opts: HubServerOptions = {}): Promise<HubServer> {
  const options = {
    tokens: opts.tokens ?? DEFAULT_TOKENS,
    pageSize: opts.pageSize ?? 1000,
    multipartThreshold: opts.multipartThreshold ?? Number.POSITIVE_INFINITY,
    multipartChunkSize: opts.multipartChunkSize ?? 5 * 1024 * 1024,
    verifyAction: opts.verifyAction ?? false,
  };
  const repos = new Map<string, EmuRepo>();
  const lfsObjects = new Map<string, Buffer>();
  const parts = new Map<string, Map<number, Buffer>>();
  const requests: RequestRecord[] = [];
  const faults: Faults = {};
  let counter = 0;
  let hubUrl = '';
  let cdnUrl = '';

  const newSha = (seed: string): string => createHash('sha1').update(`${seed}\0${++counter}\0${Date.now()}`).digest('hex');

  const resolveRev = (repo: EmuRepo, rev: string): Commit | undefined => {
    const pr = /^refs\/pr\/(\d+)$/.exec(rev);
    const sha = pr ? repo.prs.get(Number(pr[1])) : (repo.branches.get(rev) ?? repo.tags.get(rev) ?? (repo.commits.has(rev) ? rev : undefined));
    return sha ? repo.commits.get(sha) : undefined;
  };

  const commitOn = (repo: EmuRepo, parentSha: string | undefined, summary: string, change: (files: Map<string, EmuFile>) => void): Commit => {
    const parent = parentSha ? repo.commits.get(parentSha) : undefined;
    const files = new Map(parent?.files ?? []);
    change(files);
    const commit: Commit = { sha: newSha(`${repo.id}${summary}`), parent: parentSha, summary, files };
    repo.commits.set(commit.sha, commit);
    return commit;
  };

  const newRepo = (id: string, o: AddRepoOptions = {}): EmuRepo => {
    const repo: EmuRepo = {
      id,
      private: o.private ?? false,
      gated: o.gated ?? false,
      gatedAllowed: new Set(o.gatedAllowed ?? []),
      branches: new Map(),
      tags: new Map(),
      prs: new Map(),
      commits: new Map(),
    };
    const init = commitOn(repo, undefined, 'initial commit', (files) => {
      files.set('.gitattributes', makeFile(Buffer.from(GITATTRIBUTES), false));
    });
    repo.branches.set('main', init.sha);
    repos.set(id, repo);
    return repo;
  };

  const toBuffer = (v: string | Uint8Array): Buffer => (typeof v === 'string' ? Buffer.from(v, 'utf-8') : Buffer.from(v));

  const commitFiles = (id: string, branch: string, files: Record<string, string | Uint8Array | null>, o: AddRepoOptions = {}): string => {
    const repo = repos.get(id);
    if (!repo) throw new Error(`no repo ${id}`);
    const rule = o.lfs ?? hubLfsRule;
    const c = commitOn(repo, repo.branches.get(branch) ?? repo.branches.get('main'), o.summary ?? 'update', (map) => {
      for (const [path, value] of Object.entries(files)) {
        if (value === null) map.delete(path);
        else {
          const content = toBuffer(value);
          const f = makeFile(content, rule(path, content));
          if (f.lfs) lfsObjects.set(f.sha256, content);
          map.set(path, f);
        }
      }
    });
    repo.branches.set(branch, c.sha);
    return c.sha;
  };

  const identify = (req: http.IncomingMessage): TokenInfo | undefined => {
    const auth = req.headers.authorization;
    if (!auth) return undefined;
    const token = /^Bearer (.+)$/.exec(auth)?.[1];
    const info = token ? options.tokens[token] : undefined;
    if (!info) throw new HttpError(401, 'Invalid credentials in Authorization header');
    return info;
  };

  const canWrite = (who: TokenInfo | undefined, namespace: string): boolean =>
    who !== undefined && who.role === 'write' && (who.user === namespace || (who.orgs ?? []).includes(namespace));

  const canSee = (who: TokenInfo | undefined, repo: EmuRepo): boolean => {
    if (!repo.private) return true;
    const ns = repo.id.split('/')[0]!;
    return who !== undefined && (who.user === ns || (who.orgs ?? []).includes(ns));
  };

  const findRepo = (who: TokenInfo | undefined, id: string): EmuRepo => {
    const repo = repos.get(id);
    if (!repo || !canSee(who, repo)) throw new HttpError(who ? 404 : 401, 'Repository not found', 'RepoNotFound');
    return repo;
  };

  const revOrThrow = (repo: EmuRepo, rev: string): Commit => {
    const c = resolveRev(repo, rev);
    if (!c) throw new HttpError(404, `Invalid rev id: ${rev}`, 'RevisionNotFound');
    return c;
  };

  const takeFault = <T extends FaultMatch>(f: T | undefined, path: string, sha: string): T | undefined => {
    if (!f || (f.match !== path && f.match !== sha)) return undefined;
    const times = f.times ?? 1;
    if (times <= 0) return undefined;
    f.times = times - 1;
    return f;
  };

  /** Sends a file's bytes, honouring Range and the faults. Returns the bytes sent. */
  const serveBytes = (
    req: http.IncomingMessage,
    res: http.ServerResponse,
    file: EmuFile,
    path: string,
    headers: Record<string, string>,
  ): number => {
    const size = file.content.byteLength;
    const status = takeFault(faults.status, path, file.sha256);
    if (status) {
      res.writeHead(status.status, { 'content-type': 'text/plain' });
      res.end('injected failure');
      return 0;
    }
    let range = faults.ignoreRange ? undefined : parseRange(req.headers.range, size);
    if (range === 'invalid') {
      res.writeHead(416, { 'content-range': `bytes */${size}` });
      res.end();
      return 0;
    }
    let body = file.content;
    const h: Record<string, string> = { ...headers, 'accept-ranges': 'bytes', 'content-type': 'application/octet-stream' };
    let code = 200;
    if (range) {
      body = file.content.subarray(range.start, range.end + 1);
      h['content-range'] = `bytes ${range.start}-${range.end}/${size}`;
      code = 206;
    }
    h['content-length'] = String(body.byteLength);
    if (req.method === 'HEAD') {
      res.writeHead(code, h);
      res.end();
      return 0;
    }
    if (takeFault(faults.corrupt, path, file.sha256) && body.byteLength > 0) {
      body = Buffer.from(body);
      body[body.byteLength >> 1] = body[body.byteLength >> 1]! ^ 0xff;
    }
    const drop = takeFault(faults.dropAfter, path, file.sha256);
    const stall = takeFault(faults.stallAfter, path, file.sha256);
    res.writeHead(code, h);
    if (stall && stall.bytes < body.byteLength) {
      res.write(body.subarray(0, stall.bytes));
      return stall.bytes;
    }
    if (drop && drop.bytes < body.byteLength) {
      // Let the client take the bytes in before the connection goes (a real drop can lose some in flight).
      res.write(body.subarray(0, drop.bytes), () => setTimeout(() => res.socket?.destroy(), 30));
      return drop.bytes;
    }
    res.end(body);
    return body.byteLength;
  };

  const json = (res: http.ServerResponse, status: number, value: unknown, headers: Record<string, string> = {}): void => {
    res.writeHead(status, { 'content-type': 'application/json', ...headers });
    res.end(JSON.stringify(value));
  };

  const treeEntries = (commit: Commit, prefix: string): Array<Record<string, unknown>> => {
    const dirs = new Set<string>();
    const out: Array<Record<string, unknown>> = [];
    for (const [path, f] of [...commit.files].sort(([a], [b]) => (a < b ? -1 : 1))) {
      if (prefix && !path.startsWith(`${prefix}/`)) continue;
      const segs = path.split('/');
      for (let i = 1; i < segs.length; i++) {
        const d = segs.slice(0, i).join('/');
        if (!dirs.has(d) && (!prefix || d.startsWith(`${prefix}/`))) {
          dirs.add(d);
          out.push({ type: 'directory', oid: createHash('sha1').update(d).digest('hex'), size: 0, path: d });
        }
      }
      const entry: Record<string, unknown> = { type: 'file', oid: f.oid, size: f.content.byteLength, path };
      if (f.lfs) entry.lfs = { oid: f.sha256, size: f.content.byteLength, pointerSize: pointer(f.sha256, f.content.byteLength).length };
      out.push(entry);
    }
    return out;
  };

  const modelInfo = (repo: EmuRepo, commit: Commit): Record<string, unknown> => ({
    _id: createHash('md5').update(repo.id).digest('hex').slice(0, 24),
    id: repo.id,
    modelId: repo.id,
    sha: commit.sha,
    private: repo.private,
    gated: repo.gated,
    disabled: false,
    downloads: 0,
    likes: 0,
    tags: [],
    lastModified: '2026-01-01T00:00:00.000Z',
    siblings: [...commit.files.keys()].sort().map((rfilename) => ({ rfilename })),
  });

  const handleHub = async (req: http.IncomingMessage, res: http.ServerResponse, record: RequestRecord): Promise<void> => {
    const url = new URL(req.url ?? '/', hubUrl);
    const segs = url.pathname.split('/').slice(1).map(decodeURIComponent);
    const method = req.method ?? 'GET';
    const who = identify(req);

    if (url.pathname === '/api/whoami-v2') {
      if (!who) throw new HttpError(401, 'Invalid username or password.');
      return json(res, 200, { type: 'user', name: who.user, orgs: (who.orgs ?? []).map((name) => ({ name })), auth: { accessToken: { role: who.role } } });
    }

    if (url.pathname === '/api/repos/create' && method === 'POST') {
      const body = JSON.parse((await readBody(req)).toString()) as { name?: string; organization?: string; visibility?: string; private?: boolean };
      if (!who) throw new HttpError(401, 'You must be authenticated to create a repo');
      const ns = body.organization ?? who.user;
      if (!canWrite(who, ns)) throw new HttpError(403, `You don't have the rights to create a model under the namespace "${ns}"`);
      const id = `${ns}/${body.name}`;
      if (repos.has(id)) return json(res, 409, { error: 'You already created this model repo', url: `${hubUrl}/${id}` });
      newRepo(id, { private: body.visibility === 'private' || body.private === true });
      return json(res, 200, { url: `${hubUrl}/${id}`, name: id });
    }

    if (segs[0] === 'api' && segs[1] === 'complete_multipart' && method === 'POST') {
      const oid = segs[2]!;
      const body = JSON.parse((await readBody(req)).toString()) as { oid: string; parts: Array<{ partNumber: number; etag: string }> };
      const got = parts.get(oid);
      if (!got || body.oid !== oid) throw new HttpError(400, 'unknown multipart upload');
      const buf = Buffer.concat(body.parts.map((p) => got.get(p.partNumber) ?? Buffer.alloc(0)));
      if (sha256(buf) !== oid) throw new HttpError(400, 'multipart content does not match the oid');
      lfsObjects.set(oid, buf);
      parts.delete(oid);
      return json(res, 200, {});
    }

    // /api/models/{ns}/{name}/...
    if (segs[0] === 'api' && segs[1] === 'models' && segs.length >= 4) {
      const id = `${segs[2]}/${segs[3]}`;
      const action = segs[4];
      const repo = findRepo(who, id);
      if (action === undefined && method === 'GET') return json(res, 200, modelInfo(repo, revOrThrow(repo, 'main')));
      if (action === 'revision' && method === 'GET') return json(res, 200, modelInfo(repo, revOrThrow(repo, segs.slice(5).join('/'))));
      if (action === 'tree' && method === 'GET') {
        const commit = revOrThrow(repo, segs[5]!);
        const prefix = segs.slice(6).join('/');
        const entries = treeEntries(commit, prefix);
        const recursive = url.searchParams.get('recursive') === 'true' || url.searchParams.get('recursive') === 'True';
        const shown = recursive ? entries : entries.filter((e) => !(e.path as string).slice(prefix ? prefix.length + 1 : 0).includes('/'));
        const cursor = Number(url.searchParams.get('cursor') ?? '0');
        const page = shown.slice(cursor, cursor + options.pageSize);
        const headers: Record<string, string> = {};
        if (cursor + options.pageSize < shown.length) {
          const next = new URL(url.toString());
          next.searchParams.set('cursor', String(cursor + options.pageSize));
          headers.link = `<${next.toString()}>; rel="next"`;
        }
        return json(res, 200, page, headers);
      }
      if (action === 'paths-info' && method === 'POST') {
        const commit = revOrThrow(repo, segs.slice(5).join('/'));
        const body = JSON.parse((await readBody(req)).toString()) as { paths?: string[] };
        const all = treeEntries(commit, '');
        return json(res, 200, all.filter((e) => (body.paths ?? []).includes(e.path as string)));
      }
      if (action === 'refs' && method === 'GET') {
        const list = (m: Map<string, string>, kind: string): unknown[] =>
          [...m].map(([name, sha]) => ({ name, ref: `refs/${kind}/${name}`, targetCommit: sha }));
        return json(res, 200, { branches: list(repo.branches, 'heads'), tags: list(repo.tags, 'tags'), converts: [] });
      }
      if (!canWrite(who, id.split('/')[0]!)) {
        if (!who) throw new HttpError(401, 'You must be authenticated');
        throw new HttpError(403, 'You don\'t have the rights to write to this repo');
      }
      if (action === 'branch' && method === 'POST') {
        const branch = segs.slice(5).join('/');
        const body = JSON.parse((await readBody(req)).toString() || '{}') as { startingPoint?: string };
        if (repo.branches.has(branch)) return json(res, 409, { error: `Reference already exists: refs/heads/${branch}` });
        const from = revOrThrow(repo, body.startingPoint ?? 'main');
        repo.branches.set(branch, from.sha);
        return json(res, 200, {});
      }
      if (action === 'preupload' && method === 'POST') {
        const rev = segs.slice(5).join('/');
        const commit = resolveRev(repo, rev);
        const body = JSON.parse((await readBody(req)).toString()) as { files: Array<{ path: string; size: number; sample: string }> };
        return json(res, 200, {
          files: body.files.map((f) => {
            const sample = Buffer.from(f.sample, 'base64');
            const big = f.size > 10 * 1024 * 1024;
            const existing = commit?.files.get(f.path);
            return { path: f.path, uploadMode: big || hubLfsRule(f.path, sample) ? 'lfs' : 'regular', shouldIgnore: false, ...(existing ? { oid: existing.oid } : {}) };
          }),
        });
      }
      if (action === 'commit' && method === 'POST') {
        const rev = segs.slice(5).join('/');
        const createPr = url.searchParams.get('create_pr') === '1';
        const base = revOrThrow(repo, rev);
        const lines = (await readBody(req)).toString().split('\n').filter((l) => l.trim());
        let summary = '';
        let parentCommit: string | undefined;
        const adds = new Map<string, EmuFile>();
        const deletes: string[] = [];
        for (const line of lines) {
          const { key, value } = JSON.parse(line) as { key: string; value: Record<string, unknown> };
          if (key === 'header') {
            summary = String(value.summary ?? '');
            parentCommit = value.parentCommit as string | undefined;
          } else if (key === 'file') {
            const content = Buffer.from(String(value.content), value.encoding === 'base64' ? 'base64' : 'utf-8');
            if (content.byteLength > 10 * 1024 * 1024 || content.subarray(0, 512).includes(0)) {
              throw new HttpError(400, `Your push was rejected because it contains binary files or files larger than 10 MiB (${String(value.path)}). Please use LFS.`);
            }
            adds.set(String(value.path), makeFile(content, false));
          } else if (key === 'lfsFile') {
            const oid = String(value.oid);
            const content = lfsObjects.get(oid);
            if (!content) throw new HttpError(422, `LFS pointer pointed to a file that does not exist: ${String(value.path)}`);
            adds.set(String(value.path), makeFile(content, true));
          } else if (key === 'deletedFile') {
            deletes.push(String(value.path));
          } else {
            throw new HttpError(400, `unknown commit line ${key}`);
          }
        }
        if (parentCommit && parentCommit !== base.sha && !createPr) {
          throw new HttpError(412, 'A commit has happened since. Please refresh and try again.');
        }
        const c = commitOn(repo, base.sha, summary, (files) => {
          for (const d of deletes) files.delete(d);
          for (const [p, f] of adds) files.set(p, f);
        });
        if (createPr) {
          const n = repo.prs.size + 1;
          repo.prs.set(n, c.sha);
          return json(res, 200, { commitOid: c.sha, commitUrl: `${hubUrl}/${id}/commit/${c.sha}`, pullRequestUrl: `${hubUrl}/${id}/discussions/${n}` });
        }
        repo.branches.set(rev, c.sha);
        return json(res, 200, { commitOid: c.sha, commitUrl: `${hubUrl}/${id}/commit/${c.sha}` });
      }
      throw new HttpError(404, 'Not Found');
    }

    // /{ns}/{name}.git/info/lfs/objects/{batch,verify}
    if (segs.length === 6 && segs[1]!.endsWith('.git') && segs[2] === 'info' && segs[3] === 'lfs' && segs[4] === 'objects') {
      const id = `${segs[0]}/${segs[1]!.slice(0, -4)}`;
      const repo = findRepo(who, id);
      if (!canWrite(who, id.split('/')[0]!)) throw new HttpError(who ? 403 : 401, 'You don\'t have the rights to write to this repo');
      const body = JSON.parse((await readBody(req)).toString()) as {
        operation?: string;
        transfers?: string[];
        objects: Array<{ oid: string; size: number }>;
      };
      if (segs[5] === 'verify') {
        const obj = lfsObjects.get((body as unknown as { oid: string }).oid);
        if (!obj) throw new HttpError(404, 'object not found');
        return json(res, 200, {});
      }
      if (segs[5] !== 'batch' || body.operation !== 'upload') throw new HttpError(400, 'only uploads');
      void repo;
      let multipart = false;
      const objects = body.objects.map((o) => {
        if (lfsObjects.has(o.oid)) return { oid: o.oid, size: o.size };
        const verify = options.verifyAction ? { verify: { href: `${hubUrl}/${id}.git/info/lfs/objects/verify`, header: {} } } : {};
        if (o.size > options.multipartThreshold && (body.transfers ?? []).includes('multipart')) {
          multipart = true;
          const n = Math.ceil(o.size / options.multipartChunkSize);
          const header: Record<string, string> = { chunk_size: String(options.multipartChunkSize) };
          for (let i = 1; i <= n; i++) header[String(i).padStart(5, '0')] = `${cdnUrl}/upload/${o.oid}/part/${i}?X-Amz-Signature=emu`;
          return { oid: o.oid, size: o.size, actions: { upload: { href: `${hubUrl}/api/complete_multipart/${o.oid}?sig=emu`, header }, ...verify } };
        }
        return { oid: o.oid, size: o.size, actions: { upload: { href: `${cdnUrl}/upload/${o.oid}?X-Amz-Signature=emu&size=${o.size}` }, ...verify } };
      });
      return json(res, 200, { transfer: multipart ? 'multipart' : 'basic', objects, hash_algo: 'sha256' }, {
        'content-type': 'application/vnd.git-lfs+json',
      });
    }

    // /{ns}/{name}/resolve/{rev}/{path...}
    if (segs.length >= 5 && segs[2] === 'resolve' && (method === 'GET' || method === 'HEAD')) {
      const id = `${segs[0]}/${segs[1]}`;
      const repo = findRepo(who, id);
      const commit = revOrThrow(repo, segs[3]!);
      const path = segs.slice(4).join('/');
      if (repo.gated && !(who && repo.gatedAllowed.has(who.user))) {
        if (!who) throw new HttpError(401, `Access to model ${id} is restricted. You must have access to it and be authenticated to access it. Please log in.`, 'GatedRepo');
        throw new HttpError(403, `Access to model ${id} is restricted and you are not in the authorized list. Visit ${hubUrl}/${id} to ask for access.`, 'GatedRepo');
      }
      const file = commit.files.get(path);
      if (!file) throw new HttpError(404, 'Entry not found', 'EntryNotFound');
      const headers: Record<string, string> = { 'x-repo-commit': commit.sha, etag: `"${file.oid}"` };
      if (file.lfs) {
        const location = `${cdnUrl}/lfs/${file.sha256}?path=${encodeURIComponent(path)}&X-Amz-Signature=emu`;
        res.writeHead(302, {
          ...headers,
          location,
          'x-linked-etag': `"${file.sha256}"`,
          'x-linked-size': String(file.content.byteLength),
          'content-length': '0',
        });
        res.end();
        record.status = 302;
        return;
      }
      record.bytes = serveBytes(req, res, file, path, headers);
      record.status = res.statusCode;
      return;
    }

    throw new HttpError(404, 'Not Found');
  };

  const handleCdn = async (req: http.IncomingMessage, res: http.ServerResponse, record: RequestRecord): Promise<void> => {
    const url = new URL(req.url ?? '/', cdnUrl);
    const segs = url.pathname.split('/').slice(1);
    if (segs[0] === 'lfs' && (req.method === 'GET' || req.method === 'HEAD')) {
      const content = lfsObjects.get(segs[1]!);
      if (!content) throw new HttpError(404, 'NoSuchKey');
      const path = url.searchParams.get('path') ?? '';
      const file: EmuFile = { content, lfs: true, sha256: segs[1]!, oid: '' };
      record.bytes = serveBytes(req, res, file, path, { etag: `"${segs[1]}"` });
      record.status = res.statusCode;
      return;
    }
    if (segs[0] === 'upload' && req.method === 'PUT') {
      const oid = segs[1]!;
      const body = await readBody(req);
      if (segs[2] === 'part') {
        const n = Number(segs[3]);
        let m = parts.get(oid);
        if (!m) parts.set(oid, (m = new Map()));
        m.set(n, body);
        res.writeHead(200, { etag: `"${createHash('md5').update(body).digest('hex')}"` });
        res.end();
        return;
      }
      if (sha256(body) !== oid) throw new HttpError(400, 'BadDigest: the content does not match the oid');
      lfsObjects.set(oid, body);
      res.writeHead(200, { etag: `"${createHash('md5').update(body).digest('hex')}"` });
      res.end();
      return;
    }
    throw new HttpError(404, 'NoSuchKey');
  };

  const wrap =
    (server: 'hub' | 'cdn', handler: typeof handleHub) =>
    (req: http.IncomingMessage, res: http.ServerResponse): void => {
      const record: RequestRecord = {
        server,
        method: req.method ?? 'GET',
        url: req.url ?? '/',
        ...(req.headers.range ? { range: req.headers.range } : {}),
        ...(req.headers.authorization ? { authorization: req.headers.authorization } : {}),
        status: 0,
        bytes: 0,
      };
      requests.push(record);
      handler(req, res, record)
        .then(() => {
          if (!record.status) record.status = res.statusCode;
        })
        .catch((err: unknown) => {
          const e = err instanceof HttpError ? err : new HttpError(500, String(err));
          record.status = e.status;
          if (res.headersSent) {
            res.destroy();
            return;
          }
          const headers: Record<string, string> = { 'x-error-message': e.message };
          if (e.errorCode) headers['x-error-code'] = e.errorCode;
          json(res, e.status, { error: e.message }, headers);
        });
    };

  const hub = http.createServer(wrap('hub', handleHub));
  const cdn = http.createServer(wrap('cdn', handleCdn));
  await new Promise<void>((r) => hub.listen(0, '127.0.0.1', r));
  await new Promise<void>((r) => cdn.listen(0, '127.0.0.1', r));
  hubUrl = `http://127.0.0.1:${(hub.address() as AddressInfo).port}`;
  cdnUrl = `http://127.0.0.1:${(cdn.address() as AddressInfo).port}`;

  return {
    url: hubUrl,
    cdnUrl,
    repos,
    lfsObjects,
    faults,
    requests,
    options,
    addRepo(id, files, o = {}) {
      newRepo(id, o);
      return commitFiles(id, 'main', files, { ...o, summary: o.summary ?? 'add files' });
    },
    commitFiles,
    filesAt(id, revision) {
      const repo = repos.get(id);
      const c = repo ? resolveRev(repo, revision) : undefined;
      if (!c) throw new Error(`no ${id}@${revision}`);
      return c.files;
    },
    tag(id, tag, revision) {
      const repo = repos.get(id)!;
      repo.tags.set(tag, resolveRev(repo, revision)!.sha);
    },
    clearRequests() {
      requests.length = 0;
    },
    async close() {
      hub.closeAllConnections();
      cdn.closeAllConnections();
      await Promise.all([new Promise((r) => hub.close(r)), new Promise((r) => cdn.close(r))]);
    },
  };
}
