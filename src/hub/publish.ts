/**
 * `hubmoe publish <dir> <repo-id>`: uploads a model dir to the Hub in one commit.
 *
 * 1. Checks that `dir` is a hubmoe model dir (hubmoe.json valid, config.json, onnx/*.onnx).
 * 2. Writes (or refreshes) the model card README.md, unless the dir holds a README.md of the
 *    user's own (one without hubmoe's marker).
 * 3. Hashes every file and compares it with the target branch (sha256 for LFS files, git sha1
 *    for small files), so only what changed is uploaded; a second run uploads nothing and says so.
 * 4. Creates the repo (`--private`) and the branch when missing, uploads large and binary files
 *    through LFS with a progress bar each, and makes one commit (or a pull request).
 *
 * `--dry-run` does the reading (hashes, remote listing) and reports what would be uploaded,
 * without any write to the Hub or to the dir.
 */
import { open, readFile, readdir, rename, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { HubmoeError, fileError } from '../errors.js';
import type { ModelSpec } from '../schema/spec.js';
import { validateSpec } from '../schema/validate.js';
import type { RemoteFile } from './api.js';
import { HubApi } from './api.js';
import type { ModelCardOptions } from './card.js';
import { CARD_MARKER, renderModelCard } from './card.js';
import type { CommitFile } from './commit.js';
import { createBranch, createCommit, createRepo, lfsBatch, preupload, uploadLfsObject } from './commit.js';
import { tempSuffix } from './cache.js';
import type { HubOptions, HubOptionsInput } from './env.js';
import { resolveHubOptions } from './env.js';
import { gitBlobSha1, hashFile, sha256Hex } from './hash.js';
import type { FetchLike } from './http.js';
import { hubHttp } from './http.js';
import type { Logger, ProgressReporter } from './progress.js';
import { createProgress, formatBytes, stderrLogger } from './progress.js';
import { parseRepoRef } from './repo-id.js';

export interface PublishOptions extends HubOptionsInput {
  /** Create the repo private (ignored, with a warning, when it exists already). */
  private?: boolean;
  /** Open a pull request instead of committing to the branch. */
  createPr?: boolean;
  /** Target branch (default `main`); created from the default branch's head when missing. */
  branch?: string;
  commitMessage?: string;
  commitDescription?: string;
  /** Report what would be uploaded; write nothing. */
  dryRun?: boolean;
  /** License id for the model card's metadata. */
  license?: string;
  /** More model card settings. */
  card?: Omit<ModelCardOptions, 'repoId'>;
  fetch?: FetchLike;
  log?: Logger;
  progressReporter?: ProgressReporter;
  hubOptions?: HubOptions;
  retries?: number;
  retryDelayMs?: number;
}

export type PublishStatus = 'new' | 'changed' | 'unchanged' | 'ignored';

export interface PublishFile {
  path: string;
  size: number;
  lfs: boolean;
  sha256: string;
  status: PublishStatus;
}

export interface PublishResult {
  repo: string;
  branch: string;
  dryRun: boolean;
  /** The repo did not exist (dry run: would be created). */
  repoCreated: boolean;
  /** The branch did not exist (dry run: would be created). */
  branchCreated: boolean;
  /** Files in the commit (dry run: that would be). */
  uploaded: string[];
  /** Files already on the Hub with the same content, or ignored by the repo's .gitignore. */
  skipped: string[];
  files: PublishFile[];
  /** Bytes of the files to upload. */
  uploadBytes: number;
  commitOid?: string;
  commitUrl?: string;
  prUrl?: string;
}

/** Files above this size go through LFS, as the Hub requires. */
export const LFS_THRESHOLD = 10 * 1024 * 1024;

const LFS_EXTENSIONS = [
  '.onnx', '.onnx_data', '.ort', '.safetensors', '.bin', '.pt', '.pth', '.ckpt', '.h5', '.msgpack', '.model',
  '.npy', '.npz', '.gguf', '.tflite', '.pb', '.pkl', '.pickle', '.zip', '.gz', '.tar', '.zst', '.xz', '.7z', '.arrow', '.parquet', '.wasm',
];

/** hubmoe's own rule: large, binary-looking, or of a weight/archive type → LFS. */
export function needsLfs(path: string, size: number, sample: Uint8Array): boolean {
  if (size > LFS_THRESHOLD) return true;
  const lower = path.toLowerCase();
  if (LFS_EXTENSIONS.some((ext) => lower.endsWith(ext))) return true;
  return sample.includes(0);
}

export interface ModelDir {
  dir: string;
  spec: ModelSpec;
  /** Relative `/`-separated paths, sorted, hidden files excluded. */
  files: string[];
}

async function walk(dir: string): Promise<string[]> {
  const out: string[] = [];
  const visit = async (rel: string): Promise<void> => {
    let entries;
    try {
      entries = await readdir(join(dir, rel), { withFileTypes: true });
    } catch (err) {
      throw fileError(join(dir, rel), err, 'list');
    }
    for (const e of entries) {
      if (e.name.startsWith('.') || e.name.endsWith('.tmp')) continue;
      const p = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) await visit(p);
      else if (e.isFile()) out.push(p);
    }
  };
  await visit('');
  return out.sort();
}

/** Checks that `dir` is a model dir hubmoe wrote; throws BAD_ARGUMENT naming what is missing. */
export async function readModelDir(dir: string): Promise<ModelDir> {
  let isDir = false;
  try {
    isDir = (await stat(dir)).isDirectory();
  } catch {
    // reported below
  }
  if (!isDir) throw new HubmoeError('BAD_ARGUMENT', `${dir}: not a directory; publish takes the model dir that \`hubmoe convert\` wrote`);
  const files = await walk(dir);
  const missing: string[] = [];
  if (!files.includes('hubmoe.json')) missing.push('hubmoe.json');
  if (!files.includes('config.json')) missing.push('config.json');
  if (!files.some((f) => /^onnx\/[^/]+\.onnx$/.test(f))) missing.push('onnx/*.onnx');
  if (missing.length) {
    throw new HubmoeError(
      'BAD_ARGUMENT',
      `${dir} is not a hubmoe model dir: missing ${missing.join(', ')}. Publish the output dir of \`hubmoe convert\``,
    );
  }
  const specPath = join(dir, 'hubmoe.json');
  let json: unknown;
  try {
    json = JSON.parse(await readFile(specPath, 'utf-8'));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code) throw fileError(specPath, err);
    throw new HubmoeError('BAD_SPEC', `${specPath}: not valid JSON (${(err as Error).message})`);
  }
  return { dir, spec: validateSpec(json, specPath), files };
}

async function readSample(path: string): Promise<Uint8Array> {
  const fh = await open(path, 'r').catch((err: unknown) => {
    throw fileError(path, err);
  });
  try {
    const buf = new Uint8Array(512);
    const { bytesRead } = await fh.read(buf, 0, 512, 0);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

function unchanged(local: { size: number; sha256: string; gitSha1?: string }, remote: RemoteFile | undefined): boolean {
  if (!remote) return false;
  if (remote.lfs) return remote.lfs.sha256 === local.sha256;
  return local.gitSha1 !== undefined && remote.oid === local.gitSha1;
}

interface LocalFile extends CommitFile {
  gitSha1?: string;
  sample: Uint8Array;
}

export async function publish(dir: string, repoId: string, opts: PublishOptions = {}): Promise<PublishResult> {
  const ref = parseRepoRef(repoId);
  if (!ref.repo.includes('/')) {
    throw new HubmoeError('BAD_ARGUMENT', `publish needs a full repo id, org/name (your user name or an organization), not "${repoId}"`);
  }
  if (ref.revision !== undefined) {
    throw new HubmoeError('BAD_ARGUMENT', `publish: give the target branch with --branch, not "@${ref.revision}"`);
  }
  const repo = ref.repo;
  const branch = opts.branch ?? 'main';
  const dryRun = opts.dryRun ?? false;
  const hub = opts.hubOptions ?? resolveHubOptions(opts);
  const log = opts.log ?? stderrLogger(hub.progressStream, { color: hub.color });
  const progress = opts.progressReporter ?? createProgress({ enabled: hub.progress, stream: hub.progressStream, color: hub.color });
  if (hub.offline) {
    throw new HubmoeError('HUB_OFFLINE', 'publish needs the network, but offline mode is on (HF_HUB_OFFLINE): unset it to publish');
  }
  const http = hubHttp(hub, opts);
  const api = new HubApi(http);

  // 1-2. The model dir and its card.
  const model = await readModelDir(dir);
  const cardPath = join(dir, 'README.md');
  const existingCard = model.files.includes('README.md') ? await readFile(cardPath, 'utf-8').catch(() => undefined) : undefined;
  let cardContent: Uint8Array | undefined;
  const fileList = model.files.includes('README.md') ? model.files : [...model.files, 'README.md'].sort();
  if (existingCard === undefined || existingCard.includes(CARD_MARKER)) {
    const card = renderModelCard(model.spec, { endpoint: hub.endpoint, license: opts.license, files: fileList, ...opts.card, repoId: repo });
    if (card !== existingCard) {
      if (dryRun) cardContent = Buffer.from(card, 'utf-8');
      else {
        const tmp = `${cardPath}.${tempSuffix()}.tmp`;
        try {
          await writeFile(tmp, card);
          await rename(tmp, cardPath);
        } catch (err) {
          throw fileError(cardPath, err, 'write');
        }
        log.info(`${existingCard === undefined ? 'wrote' : 'refreshed'} the model card ${cardPath}`);
      }
    }
  } else {
    log.info(`keeping ${cardPath}: it was not written by hubmoe`);
  }

  // 3. Hash every file.
  const locals: LocalFile[] = [];
  for (const path of fileList) {
    if (path === 'README.md' && cardContent) {
      locals.push({
        path,
        size: cardContent.byteLength,
        sha256: sha256Hex(cardContent),
        gitSha1: gitBlobSha1(cardContent),
        lfs: false,
        content: cardContent,
        sample: cardContent.subarray(0, 512),
      });
      continue;
    }
    const localPath = join(dir, ...path.split('/'));
    const size = (await stat(localPath).catch((err: unknown) => {
      throw fileError(localPath, err);
    })).size;
    const bar = size > LFS_THRESHOLD ? progress.start(`hashing ${path}`, size) : undefined;
    const h = await hashFile(localPath, { gitSha1: size <= LFS_THRESHOLD, onBytes: bar ? (n) => bar.tick(n) : undefined });
    bar?.done();
    const sample = await readSample(localPath);
    locals.push({ path, size: h.size, sha256: h.sha256, gitSha1: h.gitSha1, lfs: needsLfs(path, h.size, sample), localPath, sample });
  }

  // 4. What the Hub has.
  let repoExists = true;
  try {
    const info = await api.repoInfo(repo);
    if (opts.private === true && !info.private) log.warn(`${repo} exists and is public; --private does not change an existing repo`);
  } catch (err) {
    if (!(err instanceof HubmoeError && err.code === 'HUB_NOT_FOUND')) throw err;
    repoExists = false;
  }
  let branchExists = repoExists;
  if (repoExists && branch !== 'main') {
    const refs = await api.listRefs(repo);
    branchExists = refs.branches.some((b) => b.name === branch);
  }
  let head: string | undefined;
  let remote = new Map<string, RemoteFile>();
  const readRemote = async (): Promise<void> => {
    head = await api.resolveRevision(repo, branchExists ? branch : 'main');
    remote = new Map((await api.listFiles(repo, head)).map((f) => [f.path, f]));
  };
  if (repoExists) await readRemote();

  // A file the Hub stores through LFS stays in LFS.
  for (const f of locals) if (remote.get(f.path)?.lfs) f.lfs = true;
  const files: PublishFile[] = locals.map((f) => ({
    path: f.path,
    size: f.size,
    lfs: f.lfs,
    sha256: f.sha256,
    status: unchanged(f, remote.get(f.path)) ? 'unchanged' : remote.has(f.path) ? 'changed' : 'new',
  }));
  let toUpload = locals.filter((_, i) => files[i]!.status !== 'unchanged');
  const result: PublishResult = {
    repo,
    branch,
    dryRun,
    repoCreated: !repoExists,
    branchCreated: !branchExists,
    uploaded: toUpload.map((f) => f.path),
    skipped: files.filter((f) => f.status === 'unchanged').map((f) => f.path),
    files,
    uploadBytes: toUpload.reduce((n, f) => n + f.size, 0),
  };
  const where = `${repo}${branch === 'main' ? '' : `@${branch}`}`;

  if (toUpload.length === 0) {
    log.info(`nothing to upload: ${where} already has the same ${files.length} files`);
    return result;
  }

  if (dryRun) {
    if (!repoExists) log.info(`would create ${opts.private ? 'private' : 'public'} repo ${repo}`);
    if (!branchExists && repoExists) log.info(`would create branch ${branch}`);
    log.info(`would upload ${toUpload.length} of ${files.length} files (${formatBytes(result.uploadBytes)}) to ${where}${opts.createPr ? ' as a pull request' : ''}:`);
    for (const f of files) {
      if (f.status === 'unchanged') continue;
      log.info(`  ${f.status === 'new' ? '+' : '~'} ${f.path}  ${formatBytes(f.size)}${f.lfs ? '  (LFS)' : ''}`);
    }
    if (result.skipped.length) log.info(`${result.skipped.length} files unchanged`);
    return result;
  }

  // 5. Writes.
  if (!repoExists) {
    await createRepo(http, repo, { private: opts.private });
    log.info(`created ${opts.private ? 'private ' : ''}repo ${hub.endpoint}/${repo}`);
    repoExists = true;
    branchExists = branch === 'main';
    await readRemote();
  }
  if (!branchExists) {
    await createBranch(http, repo, branch, head);
    log.info(`created branch ${branch}`);
    branchExists = true;
  }

  const modes = await preupload(
    http,
    repo,
    branch,
    toUpload.map((f) => ({ path: f.path, size: f.size, sample: f.sample })),
    opts.createPr,
  );
  const ignored = new Set<string>();
  for (const f of toUpload) {
    const m = modes.get(f.path);
    if (m?.shouldIgnore) {
      ignored.add(f.path);
      log.warn(`${f.path} is ignored by the repo's .gitignore; not uploading it`);
    }
    if (m?.uploadMode === 'lfs') f.lfs = true;
  }
  toUpload = toUpload.filter((f) => !ignored.has(f.path));
  for (const pf of files) {
    if (ignored.has(pf.path)) pf.status = 'ignored';
    const lf = toUpload.find((f) => f.path === pf.path);
    if (lf) pf.lfs = lf.lfs;
  }
  result.uploaded = toUpload.map((f) => f.path);
  result.skipped = files.filter((f) => f.status === 'unchanged' || f.status === 'ignored').map((f) => f.path);
  result.uploadBytes = toUpload.reduce((n, f) => n + f.size, 0);
  if (toUpload.length === 0) {
    log.info(`nothing to upload: every changed file is ignored by ${repo}'s .gitignore`);
    return result;
  }

  const lfsFiles = toUpload.filter((f) => f.lfs);
  if (lfsFiles.length) {
    const batch = await lfsBatch(
      http,
      repo,
      branch,
      lfsFiles.map((f) => ({ oid: f.sha256, size: f.size })),
    );
    const byOid = new Map(batch.objects.map((o) => [o.oid, o]));
    for (const f of lfsFiles) {
      const object = byOid.get(f.sha256);
      if (!object) throw new HubmoeError('HUB_NETWORK', `uploading ${f.path} to ${repo}: the LFS batch answer does not mention it`);
      await uploadLfsObject(http, repo, f, object, progress, opts.retries ?? 3);
    }
  }

  const summary = opts.commitMessage ?? `Upload ${model.spec.family} model converted with hubmoe`;
  const commit = await createCommit(http, repo, branch, {
    summary,
    description: opts.commitDescription,
    parentCommit: head,
    files: toUpload,
    createPr: opts.createPr,
  });
  result.commitOid = commit.commitOid;
  result.commitUrl = commit.commitUrl;
  if (commit.pullRequestUrl) result.prUrl = commit.pullRequestUrl;
  log.info(
    commit.pullRequestUrl
      ? `opened a pull request with ${toUpload.length} files (${formatBytes(result.uploadBytes)}): ${commit.pullRequestUrl}`
      : `uploaded ${toUpload.length} files (${formatBytes(result.uploadBytes)}) to ${where}: ${commit.commitUrl}`,
  );
  if (result.skipped.length) log.info(`${result.skipped.length} files were already up to date`);
  return result;
}
