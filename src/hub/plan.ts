/**
 * Which files of a repo a conversion needs (config, generation config, tokenizer, the weights in the
 * preferred format and their index), and how many bytes that is, for `convert --dry-run`,
 * `inspect` and for downloading nothing else.
 */
import { TOKENIZER_FILES, findWeightFiles } from '../io/checkpoint.js';
import type { WeightFormat } from '../io/checkpoint.js';
import type { HubStore } from './store.js';

export type FileRole = 'config' | 'generation' | 'tokenizer' | 'index' | 'weights';

export interface PlannedFile {
  path: string;
  role: FileRole;
  size: number;
  /** Already in the cache. */
  cached: boolean;
}

export interface DownloadPlan {
  repo: string;
  revision: string;
  commit: string;
  format: WeightFormat;
  files: PlannedFile[];
  totalBytes: number;
  /** Bytes not yet in the cache. */
  downloadBytes: number;
}


/** The non-weight files conversion reads or copies, among `files` (top level only). */
export function conversionFiles(files: string[]): Array<{ path: string; role: FileRole }> {
  const present = new Set(files);
  const out: Array<{ path: string; role: FileRole }> = [];
  if (present.has('config.json')) out.push({ path: 'config.json', role: 'config' });
  if (present.has('generation_config.json')) out.push({ path: 'generation_config.json', role: 'generation' });
  for (const t of TOKENIZER_FILES) if (present.has(t)) out.push({ path: t, role: 'tokenizer' });
  return out;
}

/**
 * The plan for converting a HubStore: reads only the weight index (a small JSON file) to find the
 * shards; nothing else is downloaded.
 */
export async function planDownload(store: HubStore): Promise<DownloadPlan> {
  const all = await store.list();
  const sel = await findWeightFiles(store);
  const planned: Array<{ path: string; role: FileRole }> = conversionFiles(all);
  if (sel.index) planned.push({ path: sel.index, role: 'index' });
  const weights = sel.files;
  for (const w of weights) planned.push({ path: w, role: 'weights' });
  const files: PlannedFile[] = [];
  for (const p of planned) {
    files.push({ ...p, size: store.size(p.path), cached: await store.isCached(p.path) });
  }
  const totalBytes = files.reduce((n, f) => n + f.size, 0);
  const downloadBytes = files.filter((f) => !f.cached).reduce((n, f) => n + f.size, 0);
  return { repo: store.repo, revision: store.revision, commit: store.commit, format: sel.format, files, totalBytes, downloadBytes };
}
