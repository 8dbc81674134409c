/**
 * The Hub's write API, as huggingface_hub speaks it:
 *
 * 1. `POST /api/repos/create` `{name, organization, visibility?}` (409 when it exists);
 *    `POST /api/models/{repo}/branch/{branch}` to create a branch.
 * 2. `POST /api/models/{repo}/preupload/{branch}` `{files: [{path, size, sample}]}`: the Hub says
 *    which files go through LFS (`uploadMode`) and which to skip (`shouldIgnore`).
 * 3. `POST /{repo}.git/info/lfs/objects/batch` (git-lfs batch API, transfers basic and multipart):
 *    objects the Hub already has come back without `actions`; the others get a pre-signed `PUT`
 *    (basic) or one pre-signed URL per part plus a completion URL (multipart, when the upload header
 *    carries `chunk_size`), and possibly a `verify` action.
 * 4. `POST /api/models/{repo}/commit/{branch}[?create_pr=1]`, ndjson: a `header` line, then one
 *    `file` line (base64 content) per regular file and one `lfsFile` line (sha256 oid) per LFS file.
 *
 * Uploads stream from disk with a byte count for the progress bar; pre-signed URLs get no token.
 */
import { createReadStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { HubmoeError, fileError } from '../errors.js';
import { encodeRevision } from './api.js';
import type { HubHttp, RequestContext } from './http.js';
import { isTransient, sleep } from './http.js';
import type { ProgressReporter } from './progress.js';

/** A file to commit: bytes on disk (`localPath`) or in memory (`content`). */
export interface CommitFile {
  path: string;
  size: number;
  sha256: string;
  lfs: boolean;
  localPath?: string;
  content?: Uint8Array;
}

export interface CommitResult {
  commitOid: string;
  commitUrl: string;
  pullRequestUrl?: string;
}

const LFS_HEADERS = { accept: 'application/vnd.git-lfs+json', 'content-type': 'application/vnd.git-lfs+json' };

function splitRepo(repo: string): { organization?: string; name: string } {
  const i = repo.indexOf('/');
  return i < 0 ? { name: repo } : { organization: repo.slice(0, i), name: repo.slice(i + 1) };
}

/** Creates a model repo; returns false when it already existed. */
export async function createRepo(http: HubHttp, repo: string, options: { private?: boolean } = {}): Promise<boolean> {
  const ctx: RequestContext = { what: `creating ${repo}`, repo, write: true };
  const body: Record<string, unknown> = { ...splitRepo(repo), type: 'model' };
  if (options.private !== undefined) body.visibility = options.private ? 'private' : 'public';
  const r = await http.request(
    http.url('/api/repos/create'),
    { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) },
    ctx,
  );
  if (r.res.status === 409) {
    await r.res.body?.cancel().catch(() => undefined);
    return false;
  }
  if (!r.res.ok) throw await http.errorFrom(r, ctx);
  await r.res.body?.cancel().catch(() => undefined);
  return true;
}

/** Creates `branch` (from the default branch's head unless `startingPoint` is given). */
export async function createBranch(http: HubHttp, repo: string, branch: string, startingPoint?: string): Promise<void> {
  const ctx: RequestContext = { what: `creating branch ${branch} in ${repo}`, repo, revision: branch, write: true };
  const body = startingPoint ? { startingPoint } : {};
  const r = await http.request(
    http.url(`/api/models/${repo}/branch/${encodeRevision(branch)}`),
    { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) },
    ctx,
  );
  if (r.res.status === 409) {
    await r.res.body?.cancel().catch(() => undefined);
    return;
  }
  if (!r.res.ok) throw await http.errorFrom(r, ctx);
  await r.res.body?.cancel().catch(() => undefined);
}

export interface PreuploadAnswer {
  uploadMode: 'lfs' | 'regular';
  shouldIgnore: boolean;
}

/** Asks the Hub how each file must be uploaded, 256 files per request. */
export async function preupload(
  http: HubHttp,
  repo: string,
  branch: string,
  files: Array<{ path: string; size: number; sample: Uint8Array }>,
  createPr = false,
): Promise<Map<string, PreuploadAnswer>> {
  const ctx: RequestContext = { what: `preparing the upload to ${repo}`, repo, revision: branch, write: true };
  const out = new Map<string, PreuploadAnswer>();
  for (let i = 0; i < files.length; i += 256) {
    const chunk = files.slice(i, i + 256);
    const body = { files: chunk.map((f) => ({ path: f.path, size: f.size, sample: Buffer.from(f.sample).toString('base64') })) };
    const { data } = await http.json<{ files?: Array<{ path: string; uploadMode?: string; shouldIgnore?: boolean }> }>(
      http.url(`/api/models/${repo}/preupload/${encodeRevision(branch)}`, createPr ? { create_pr: '1' } : undefined),
      { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) },
      ctx,
    );
    for (const f of data.files ?? []) {
      out.set(f.path, { uploadMode: f.uploadMode === 'lfs' ? 'lfs' : 'regular', shouldIgnore: f.shouldIgnore === true });
    }
  }
  return out;
}

interface LfsAction {
  href: string;
  header?: Record<string, string>;
}

export interface LfsBatchObject {
  oid: string;
  size: number;
  actions?: { upload?: LfsAction; verify?: LfsAction };
  error?: { code: number; message: string };
}

/** The LFS batch request for `objects`; returns the transfer chosen and the per-object actions. */
export async function lfsBatch(
  http: HubHttp,
  repo: string,
  branch: string,
  objects: Array<{ oid: string; size: number }>,
): Promise<{ transfer: string; objects: LfsBatchObject[] }> {
  const ctx: RequestContext = { what: `requesting LFS upload URLs for ${repo}`, repo, revision: branch, write: true };
  const out: LfsBatchObject[] = [];
  let transfer = 'basic';
  for (let i = 0; i < objects.length; i += 256) {
    const body = {
      operation: 'upload',
      transfers: ['basic', 'multipart'],
      hash_algo: 'sha256',
      ref: { name: branch },
      objects: objects.slice(i, i + 256),
    };
    const { data } = await http.json<{ transfer?: string; objects?: LfsBatchObject[] }>(
      http.url(`/${repo}.git/info/lfs/objects/batch`),
      { method: 'POST', headers: LFS_HEADERS, body: JSON.stringify(body) },
      ctx,
    );
    if (!Array.isArray(data.objects)) throw new HubmoeError('HUB_NETWORK', `${ctx.what}: malformed answer (no objects)`);
    if (typeof data.transfer === 'string') transfer = data.transfer;
    out.push(...data.objects);
  }
  if (transfer !== 'basic' && transfer !== 'multipart') {
    throw new HubmoeError('UNSUPPORTED', `${ctx.what}: the Hub chose the "${transfer}" transfer, which hubmoe does not speak`);
  }
  return { transfer, objects: out };
}

/** A file range as a request body that counts the bytes it hands out. */
function fileBody(file: CommitFile, start: number, end: number, onBytes: (n: number) => void): BodyInit {
  if (file.content) return new Uint8Array(file.content.subarray(start, end));
  if (end <= start) return new Uint8Array(0);
  const iterator = createReadStream(file.localPath!, { start, end: end - 1, highWaterMark: 1 << 20 })[Symbol.asyncIterator]();
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        const step = (await iterator.next()) as IteratorResult<Buffer>;
        if (step.done) controller.close();
        else {
          onBytes(step.value.byteLength);
          controller.enqueue(new Uint8Array(step.value.buffer, step.value.byteOffset, step.value.byteLength));
        }
      } catch (err) {
        controller.error(fileError(file.localPath!, err));
      }
    },
    async cancel() {
      await iterator.return?.();
    },
  });
}

async function putWithRetries(
  http: HubHttp,
  url: string,
  headers: Record<string, string>,
  file: CommitFile,
  start: number,
  end: number,
  ctx: RequestContext,
  onBytes: (n: number) => void,
  retries: number,
): Promise<Headers> {
  for (let attempt = 0; ; attempt++) {
    let sent = 0;
    try {
      const body = fileBody(file, start, end, (n) => {
        sent += n;
        onBytes(n);
      });
      const r = await http.request(
        url,
        { method: 'PUT', headers: { ...headers, 'content-length': String(end - start) }, body, auth: false },
        ctx,
      );
      if (!r.res.ok) throw await http.errorFrom(r, ctx);
      await r.res.body?.cancel().catch(() => undefined);
      if (file.content) onBytes(end - start);
      return r.res.headers;
    } catch (err) {
      onBytes(-sent);
      if (!isTransient(err) || attempt >= retries) throw err;
      await sleep(http.retryDelayMs * 2 ** attempt);
    }
  }
}

/** Uploads one LFS object as the batch answer says (basic PUT or multipart), then verifies. */
export async function uploadLfsObject(
  http: HubHttp,
  repo: string,
  file: CommitFile,
  object: LfsBatchObject,
  progress: ProgressReporter,
  retries = 3,
): Promise<void> {
  const ctx: RequestContext = { what: `uploading ${file.path} to ${repo}`, repo, path: file.path, write: true };
  if (object.error) {
    throw new HubmoeError('HUB_NETWORK', `${ctx.what}: the Hub refused the object (${object.error.code} ${object.error.message})`);
  }
  const upload = object.actions?.upload;
  if (!upload) return; // the Hub already has these bytes
  const bar = progress.start(file.path, file.size);
  try {
    const header = upload.header ?? {};
    const chunkSize = header.chunk_size !== undefined ? Number(header.chunk_size) : undefined;
    if (chunkSize !== undefined) {
      if (!Number.isSafeInteger(chunkSize) || chunkSize <= 0) {
        throw new HubmoeError('HUB_NETWORK', `${ctx.what}: malformed multipart answer (chunk_size ${header.chunk_size})`);
      }
      const parts = Object.entries(header)
        .filter(([k]) => /^\d+$/.test(k))
        .map(([k, v]) => [Number(k), v] as const)
        .sort((a, b) => a[0] - b[0]);
      if (parts.length !== Math.ceil(file.size / chunkSize)) {
        throw new HubmoeError('HUB_NETWORK', `${ctx.what}: the Hub offered ${parts.length} part URLs for ${Math.ceil(file.size / chunkSize)} parts`);
      }
      const etags: Array<{ partNumber: number; etag: string }> = [];
      for (let i = 0; i < parts.length; i++) {
        const start = i * chunkSize;
        const end = Math.min(file.size, start + chunkSize);
        const h = await putWithRetries(http, parts[i]![1], {}, file, start, end, ctx, (n) => bar.tick(n), retries);
        const etag = h.get('etag');
        if (!etag) throw new HubmoeError('HUB_NETWORK', `${ctx.what}: part ${i + 1} was answered without an ETag`);
        etags.push({ partNumber: i + 1, etag });
      }
      const r = await http.request(
        upload.href,
        { method: 'POST', headers: LFS_HEADERS, body: JSON.stringify({ oid: file.sha256, parts: etags }), auth: false },
        ctx,
      );
      if (!r.res.ok) throw await http.errorFrom(r, ctx);
      await r.res.body?.cancel().catch(() => undefined);
    } else {
      await putWithRetries(http, upload.href, header, file, 0, file.size, ctx, (n) => bar.tick(n), retries);
    }
    const verify = object.actions?.verify;
    if (verify) {
      const r = await http.request(
        verify.href,
        { method: 'POST', headers: { ...LFS_HEADERS, ...(verify.header ?? {}) }, body: JSON.stringify({ oid: file.sha256, size: file.size }) },
        ctx,
      );
      if (!r.res.ok) throw await http.errorFrom(r, ctx);
      await r.res.body?.cancel().catch(() => undefined);
    }
    bar.done();
  } catch (err) {
    bar.fail();
    throw err;
  }
}

/** Creates one commit with every file (regular ones inline, LFS ones by oid). */
export async function createCommit(
  http: HubHttp,
  repo: string,
  branch: string,
  options: { summary: string; description?: string; parentCommit?: string; files: CommitFile[]; createPr?: boolean },
): Promise<CommitResult> {
  const ctx: RequestContext = { what: `committing to ${repo}@${branch}`, repo, revision: branch, write: true };
  const lines: string[] = [];
  const header: Record<string, string> = { summary: options.summary, description: options.description ?? '' };
  if (options.parentCommit) header.parentCommit = options.parentCommit;
  lines.push(JSON.stringify({ key: 'header', value: header }));
  for (const f of options.files) {
    if (f.lfs) {
      lines.push(JSON.stringify({ key: 'lfsFile', value: { path: f.path, algo: 'sha256', oid: f.sha256, size: f.size } }));
    } else {
      let bytes: Uint8Array;
      try {
        bytes = f.content ?? (await readFile(f.localPath!));
      } catch (err) {
        throw fileError(f.localPath!, err);
      }
      lines.push(JSON.stringify({ key: 'file', value: { path: f.path, encoding: 'base64', content: Buffer.from(bytes).toString('base64') } }));
    }
  }
  const { data } = await http.json<{ commitOid?: string; commitUrl?: string; pullRequestUrl?: string }>(
    http.url(`/api/models/${repo}/commit/${encodeRevision(branch)}`, options.createPr ? { create_pr: '1' } : undefined),
    { method: 'POST', headers: { 'content-type': 'application/x-ndjson' }, body: `${lines.join('\n')}\n` },
    ctx,
  );
  if (typeof data.commitOid !== 'string') throw new HubmoeError('HUB_NETWORK', `${ctx.what}: the Hub's answer has no commit id`);
  return {
    commitOid: data.commitOid,
    commitUrl: data.commitUrl ?? `${http.endpoint}/${repo}/commit/${data.commitOid}`,
    ...(data.pullRequestUrl ? { pullRequestUrl: data.pullRequestUrl } : {}),
  };
}
