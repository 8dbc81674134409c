/**
 * The Hub API client against the emulator: revisions, paged listings, redirects that drop the token,
 * and each failure (401, 403 gated, 404 repo/revision/file, network) as the right HubmoeError.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { HubApi, nextLink } from '../../src/hub/api.js';
import { HubHttp, hubError } from '../../src/hub/http.js';
import { openHubStore } from '../../src/hub/store.js';
import { captureLogger, hubInput, makeTempDir } from './helpers.js';
import { errorOf } from '../helpers.js';
import { startHubServer } from './server.js';
import type { HubServer } from './server.js';

let server: HubServer;
let commit: string;

beforeAll(async () => {
  server = await startHubServer({ pageSize: 3 });
  const files: Record<string, string | Uint8Array> = { 'config.json': '{}', 'model.safetensors': Buffer.alloc(1000, 7) };
  for (let i = 0; i < 7; i++) files[`extra/file${i}.txt`] = `file ${i}`;
  commit = server.addRepo('org/open', files);
  server.tag('org/open', 'v1', 'main');
  server.addRepo('org/gated', { 'config.json': '{}' }, { gated: 'manual', gatedAllowed: ['alice'] });
  server.addRepo('alice/secret', { 'config.json': '{}' }, { private: true });
});
afterAll(async () => server.close());
beforeEach(() => server.clearRequests());

const api = (token?: string, endpoint = server.url): HubApi => new HubApi(new HubHttp({ endpoint, token, retryDelayMs: 0, retries: 0 }));

describe('revisions and listings', () => {
  it('resolves branches, tags and shas to the commit', async () => {
    expect(await api().resolveRevision('org/open', 'main')).toBe(commit);
    expect(await api().resolveRevision('org/open', 'v1')).toBe(commit);
    expect(await api().resolveRevision('org/open', commit)).toBe(commit);
  });

  it('lists every file of a commit with sizes, oids and LFS sha256s, following the pages', async () => {
    const files = await api().listFiles('org/open', commit);
    expect(files.map((f) => f.path)).toEqual([
      '.gitattributes',
      'config.json',
      ...Array.from({ length: 7 }, (_, i) => `extra/file${i}.txt`),
      'model.safetensors',
    ]);
    const weights = files.find((f) => f.path === 'model.safetensors')!;
    expect(weights.size).toBe(1000);
    expect(weights.lfs?.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(files.find((f) => f.path === 'config.json')!.lfs).toBeUndefined();
    const pages = server.requests.filter((r) => r.url.includes('/tree/'));
    expect(pages.length).toBeGreaterThan(3);
    expect(pages.slice(1).every((r) => r.url.includes('cursor='))).toBe(true);
  });

  it('parses Link headers', () => {
    expect(nextLink('<https://h/api/x?cursor=2>; rel="next"')).toBe('https://h/api/x?cursor=2');
    expect(nextLink('<https://h/a>; rel="prev", <https://h/b>; rel="next"')).toBe('https://h/b');
    expect(nextLink(null)).toBeUndefined();
  });
});

describe('redirects', () => {
  it('follows the LFS redirect to the CDN without sending the token there', async () => {
    const r = await api('hf_write_alice').getRange('org/open', commit, 'model.safetensors', 10, 20);
    expect(r.res.status).toBe(206);
    expect(new Uint8Array(await r.res.arrayBuffer())).toEqual(new Uint8Array(10).fill(7));
    expect(r.url.startsWith(server.cdnUrl)).toBe(true);
    const hub = server.requests.filter((x) => x.server === 'hub');
    const cdn = server.requests.filter((x) => x.server === 'cdn');
    expect(hub.at(-1)!.authorization).toBe('Bearer hf_write_alice');
    expect(cdn).toHaveLength(1);
    expect(cdn[0]!.authorization).toBeUndefined();
    expect(cdn[0]!.range).toBe('bytes=10-19');
  });
});

describe('errors', () => {
  it('401 for a bad token → HUB_AUTH telling how to log in', async () => {
    const e = await errorOf(api('hf_nonsense').resolveRevision('org/open', 'main'));
    expect(e.code).toBe('HUB_AUTH');
    expect(e.message).toMatch(/token invalid or missing/);
    expect(e.message).toMatch(/HF_TOKEN/);
    expect(e.message).toMatch(/hf auth login/);
  });

  it('a gated repo lists its files but a download without access → HUB_GATED naming the license page', async () => {
    const { dir, cleanup } = await makeTempDir();
    try {
      const store = await openHubStore('org/gated', { ...hubInput(server, dir, { token: 'hf_read_bob' }), log: captureLogger() });
      expect(await store.list()).toContain('config.json');
      const e = await errorOf(store.readText('config.json'));
      expect(e.code).toBe('HUB_GATED');
      expect(e.message).toContain(`accept the license at ${server.url}/org/gated`.replace('accept', 'Accept'));
      expect(e.message).toContain('with the account of your token');
      expect(server.requests.at(-1)!.status).toBe(403);

      const anon = await openHubStore('org/gated', { ...hubInput(server, dir), log: captureLogger() });
      const e2 = await errorOf(anon.readText('config.json'));
      expect(e2.code).toBe('HUB_GATED');
      expect(e2.message).toMatch(/no token/);
      expect(server.requests.at(-1)!.status).toBe(401);

      const allowed = await openHubStore('org/gated', { ...hubInput(server, dir, { token: 'hf_write_alice' }), log: captureLogger() });
      expect(await allowed.readText('config.json')).toBe('{}');
    } finally {
      await cleanup();
    }
  });

  it('a missing repo → HUB_NOT_FOUND (the Hub answers 401 without a token, 404 with one)', async () => {
    const anon = await errorOf(api().resolveRevision('org/missing', 'main'));
    expect(server.requests.at(-1)!.status).toBe(401);
    expect(anon.code).toBe('HUB_NOT_FOUND');
    expect(anon.message).toContain('org/missing');
    expect(anon.message).toMatch(/private repo.*HF_TOKEN/);
    const authed = await errorOf(api('hf_read_bob').resolveRevision('org/missing', 'main'));
    expect(server.requests.at(-1)!.status).toBe(404);
    expect(authed.code).toBe('HUB_NOT_FOUND');
    expect(authed.message).toContain('org/missing');
  });

  it('a private repo is visible with its owner\'s token and not found otherwise', async () => {
    expect(await api('hf_write_alice').resolveRevision('alice/secret', 'main')).toMatch(/^[0-9a-f]{40}$/);
    expect((await errorOf(api('hf_read_bob').resolveRevision('alice/secret', 'main'))).code).toBe('HUB_NOT_FOUND');
  });

  it('a missing revision → HUB_NOT_FOUND naming the revision', async () => {
    const e = await errorOf(api().resolveRevision('org/open', 'no-such-branch'));
    expect(e.code).toBe('HUB_NOT_FOUND');
    expect(e.message).toContain('revision "no-such-branch" not found in org/open');
    expect(e.message).toContain('--revision');
  });

  it('a missing file (404 EntryNotFound) → HUB_NOT_FOUND naming the file, repo and revision', async () => {
    const e = await errorOf(api().getRange('org/open', commit, 'nope.json', 0));
    expect(e.code).toBe('HUB_NOT_FOUND');
    expect(e.message).toContain(`nope.json not found in org/open at revision ${commit}`);
    const { dir, cleanup } = await makeTempDir();
    try {
      const store = await openHubStore('org/open', { ...hubInput(server, dir), log: captureLogger() });
      const e2 = await errorOf(store.readText('nope.json'));
      expect(e2.code).toBe('HUB_NOT_FOUND');
      expect(e2.message).toContain('nope.json not found in org/open at revision main');
    } finally {
      await cleanup();
    }
  });

  it('an unreachable endpoint → HUB_NETWORK naming it and suggesting offline mode', async () => {
    const closed = http.createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((r) => closed.close(r));
    const e = await errorOf(api(undefined, `http://127.0.0.1:${port}`).resolveRevision('org/open', 'main'));
    expect(e.code).toBe('HUB_NETWORK');
    expect(e.message).toContain(`http://127.0.0.1:${port}`);
    expect(e.message).toMatch(/ECONNREFUSED/);
    expect(e.message).toContain('HF_HUB_OFFLINE=1');
  });

  it('a connection dropped in the middle of a ranged read → HUB_NETWORK after retries', async () => {
    const { dir, cleanup } = await makeTempDir();
    try {
      server.faults.dropAfter = { match: 'model.safetensors', bytes: 100, times: 5 };
      const store = await openHubStore('org/open', { ...hubInput(server, dir), log: captureLogger(), retries: 1, retryDelayMs: 0, readAheadBytes: 0 });
      const src = await store.open('model.safetensors');
      const e = await errorOf(src.read(0, 1000));
      expect(e.code).toBe('HUB_NETWORK');
      expect(e.message).toContain('model.safetensors');
    } finally {
      delete server.faults.dropAfter;
      await cleanup();
    }
  });

  it('uses an injected fetch (no server needed)', async () => {
    const seen: string[] = [];
    const fake = (async (input: string | URL | Request) => {
      seen.push(String(input));
      return new Response('{"error":"Access to model x/y is restricted"}', {
        status: 403,
        headers: { 'x-error-code': 'GatedRepo', 'content-type': 'application/json' },
      });
    }) as typeof fetch;
    const client = new HubApi(new HubHttp({ endpoint: 'https://hub.test', token: 'hf_x', fetch: fake }));
    const e = await errorOf(client.getRange('x/y', 'a'.repeat(40), 'config.json', 0));
    expect(e.code).toBe('HUB_GATED');
    expect(e.message).toContain('https://hub.test/x/y');
    expect(seen).toEqual([`https://hub.test/x/y/resolve/${'a'.repeat(40)}/config.json`]);
  });

  it('maps other statuses: 403 on a write, 429, 5xx', () => {
    const base = { endpoint: 'https://hub.test', hadToken: true, url: 'https://hub.test/x', repo: 'a/b' };
    const h = new Headers();
    expect(hubError(403, h, '{"error":"no rights"}', { ...base, what: 'committing', write: true })).toMatchObject({
      code: 'HUB_AUTH',
      message: expect.stringMatching(/write access/),
    });
    expect(hubError(429, h, '', { ...base, what: 'x' }).code).toBe('HUB_NETWORK');
    expect(hubError(502, h, '', { ...base, what: 'x' }).message).toMatch(/502/);
  });
});
