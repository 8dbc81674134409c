import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { isHubmoeError } from '../../src/errors.js';
import { isRepoId, isValidRepoId, parseRepoRef, pickRevision } from '../../src/hub/repo-id.js';
import { makeTempDir } from './helpers.js';

describe('repo ids', () => {
  it('accepts org/name and bare names, as Python validate_repo_id does', () => {
    for (const id of ['ai21labs/Jamba-v0.1', 'Zyphra/BlackMamba-2.8B', 'state-spaces/mamba-130m-hf', 'gpt2', 'a_b/c.d-e']) {
      expect(isValidRepoId(id), id).toBe(true);
    }
    for (const id of ['', 'a/b/c', 'a//b', '-a/b', 'a/b-', 'a/.b', 'a--b/c', 'a/b..c', 'a/b.git', 'a b/c', 'a/b?', 'x'.repeat(97)]) {
      expect(isValidRepoId(id), id).toBe(false);
    }
  });

  it('parses an @revision suffix and model page URLs', () => {
    expect(parseRepoRef('org/name')).toEqual({ repo: 'org/name' });
    expect(parseRepoRef('org/name@v1.0')).toEqual({ repo: 'org/name', revision: 'v1.0' });
    expect(parseRepoRef('org/name@refs/pr/3')).toEqual({ repo: 'org/name', revision: 'refs/pr/3' });
    expect(parseRepoRef('https://huggingface.co/org/name')).toEqual({ repo: 'org/name' });
    expect(parseRepoRef('https://huggingface.co/org/name/tree/dev')).toEqual({ repo: 'org/name', revision: 'dev' });
    expect(parseRepoRef('hf.co/org/name/')).toEqual({ repo: 'org/name' });
  });

  it('rejects bad ids with BAD_ARGUMENT saying why', () => {
    for (const bad of ['a/b/c', 'org/name@', '-x/y']) {
      try {
        parseRepoRef(bad);
        expect.unreachable();
      } catch (err) {
        expect(isHubmoeError(err) && err.code).toBe('BAD_ARGUMENT');
        expect((err as Error).message).toContain(bad);
      }
    }
  });

  it('combines @revision with --revision, refusing two different ones', () => {
    expect(pickRevision({ repo: 'a/b' }, undefined)).toBe('main');
    expect(pickRevision({ repo: 'a/b', revision: 'dev' }, undefined)).toBe('dev');
    expect(pickRevision({ repo: 'a/b' }, 'v2')).toBe('v2');
    expect(pickRevision({ repo: 'a/b', revision: 'v2' }, 'v2')).toBe('v2');
    expect(() => pickRevision({ repo: 'a/b', revision: 'dev' }, 'main')).toThrow(/two revisions/);
  });
});

describe('isRepoId', () => {
  it('tells repo ids from paths: an existing path wins; ./, /, ~ are paths', async () => {
    const { dir, cleanup } = await makeTempDir();
    try {
      await mkdir(join(dir, 'org', 'model'), { recursive: true });
      const relativeTo = (p: string): boolean => existsSync(join(dir, p));
      expect(isRepoId('org/model', relativeTo)).toBe(false); // exists on disk
      expect(isRepoId('org/other', relativeTo)).toBe(true);
      expect(isRepoId(join(dir, 'org'))).toBe(false);
      expect(isRepoId('./org/model')).toBe(false);
      expect(isRepoId('/abs/path')).toBe(false);
      expect(isRepoId('~/models/x')).toBe(false);
      expect(isRepoId('..')).toBe(false);
      expect(isRepoId('C:\\models\\x')).toBe(false);
      expect(isRepoId('ai21labs/Jamba-v0.1', () => false)).toBe(true);
      expect(isRepoId('ai21labs/Jamba-v0.1@main', () => false)).toBe(true);
      expect(isRepoId('https://huggingface.co/ai21labs/Jamba-v0.1', () => false)).toBe(true);
      expect(isRepoId('a/b/c', () => false)).toBe(false);
      expect(isRepoId('', () => false)).toBe(false);
    } finally {
      await cleanup();
    }
  });
});
