/**
 * Repo ids (`org/name`, or a bare legacy `name` such as `gpt2`), validated by the rules Python's
 * `validate_repo_id` applies, and told apart from local paths.
 *
 * A reference may carry a revision: `org/name@revision` (the revision may itself contain `/`, as in
 * `refs/pr/3`). A model page URL (`https://huggingface.co/org/name`, optionally `/tree/<revision>`)
 * is accepted too, so a pasted link works.
 */
import { existsSync } from 'node:fs';
import { HubmoeError } from '../errors.js';

export interface RepoRef {
  /** `org/name` or `name`. */
  repo: string;
  /** The revision given after `@` (or in a `/tree/` URL); undefined when none was given. */
  revision?: string;
}

const MAX_REPO_ID_LENGTH = 96;
const PART = /^[A-Za-z0-9_.-]+$/;
const URL_PREFIX = /^(?:https?:\/\/)?(?:www\.)?(?:huggingface\.co|hf\.co)\//;

/** Why `id` is not a valid repo id, or undefined when it is one. */
export function repoIdProblem(id: string): string | undefined {
  if (id === '') return 'it is empty';
  if (id.length > MAX_REPO_ID_LENGTH) return `it is longer than ${MAX_REPO_ID_LENGTH} characters`;
  const parts = id.split('/');
  if (parts.length > 2) return 'it has more than one "/" (expected org/name)';
  for (const part of parts) {
    if (!PART.test(part)) return 'use only letters, digits, "-", "_" and "." in org/name';
    if (/^[-.]|[-.]$/.test(part)) return 'the org and name cannot start or end with "-" or "."';
  }
  if (id.includes('--') || id.includes('..')) return 'it cannot contain "--" or ".."';
  if (id.endsWith('.git')) return 'it cannot end with ".git"';
  return undefined;
}

export function isValidRepoId(id: string): boolean {
  return repoIdProblem(id) === undefined;
}

function splitRef(input: string): RepoRef {
  let s = input.trim();
  if (URL_PREFIX.test(s)) {
    s = s.replace(URL_PREFIX, '').replace(/\/+$/, '');
    const tree = /^([^/]+\/[^/]+)\/(?:tree|blob|resolve)\/(.+)$/.exec(s);
    if (tree) return { repo: tree[1]!, revision: decodeURIComponent(tree[2]!) };
    return { repo: s };
  }
  const at = s.indexOf('@');
  if (at < 0) return { repo: s };
  return { repo: s.slice(0, at), revision: s.slice(at + 1) };
}

/** Parses `org/name[@revision]` (or a model page URL); throws BAD_ARGUMENT saying what is wrong. */
export function parseRepoRef(input: string): RepoRef {
  const ref = splitRef(input);
  const problem = repoIdProblem(ref.repo);
  if (problem) {
    throw new HubmoeError('BAD_ARGUMENT', `"${input}" is not a Hub repo id (org/name): ${problem}`);
  }
  if (ref.revision !== undefined && ref.revision.trim() === '') {
    throw new HubmoeError('BAD_ARGUMENT', `"${input}": nothing after "@"; write org/name@revision (a branch, tag or commit sha)`);
  }
  return ref;
}

/**
 * Whether a command-line source names a Hub repo rather than a local path. A path that exists on
 * disk always wins; strings that start with `.`, `/` or `~` (or hold a backslash) are paths.
 */
export function isRepoId(source: string, exists: (p: string) => boolean = existsSync): boolean {
  const s = source.trim();
  if (s === '' || /^[./~]/.test(s) || s.includes('\\')) return false;
  if (exists(s)) return false;
  const ref = splitRef(s);
  return isValidRepoId(ref.repo) && ref.revision !== '';
}

/**
 * Combines a revision from `org/name@rev` with `--revision`; giving two different ones is an error.
 * The default is `main`.
 */
export function pickRevision(ref: RepoRef, option: string | undefined): string {
  if (ref.revision !== undefined && option !== undefined && option !== ref.revision) {
    throw new HubmoeError(
      'BAD_ARGUMENT',
      `${ref.repo}: two revisions given ("@${ref.revision}" and --revision ${option}); give only one`,
    );
  }
  return ref.revision ?? option ?? 'main';
}
