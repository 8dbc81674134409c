/**
 * hubmoe's Hugging Face Hub integration: settings resolved as Python's `hf` tools resolve them,
 * a Python-compatible cache with resumable, verified downloads, a FileStore over a remote repo,
 * and publishing with a model card. See docs/hub.md.
 */
export { resolveHubOptions, isTruthyEnv, hubCacheDir, hfHomeDir, tokenFilePath, DEFAULT_ENDPOINT } from './env.js';
export type { HubOptions, HubOptionsInput, TokenSource, EnvLike } from './env.js';
export { isRepoId, isValidRepoId, parseRepoRef, pickRevision, repoIdProblem } from './repo-id.js';
export type { RepoRef } from './repo-id.js';
export { openHubStore } from './store.js';
export type { HubStore, HubStoreFile, OpenHubStoreOptions } from './store.js';
export { publish, readModelDir, needsLfs, LFS_THRESHOLD } from './publish.js';
export type { PublishOptions, PublishResult, PublishFile, PublishStatus, ModelDir } from './publish.js';
export { renderModelCard, renderScapSection, blocksSummary, CARD_MARKER } from './card.js';
export type { ModelCardOptions } from './card.js';
export { planDownload, conversionFiles } from './plan.js';
export type { DownloadPlan, PlannedFile } from './plan.js';
export { createProgress, stderrLogger, silentLogger, noProgress, formatBytes } from './progress.js';
export type { Logger, ProgressBar, ProgressReporter } from './progress.js';
export { HubApi, blobEtag } from './api.js';
export type { RemoteFile, RepoInfo } from './api.js';
export { HubHttp } from './http.js';
export type { FetchLike } from './http.js';
export { RepoCache, repoFolderName } from './cache.js';
