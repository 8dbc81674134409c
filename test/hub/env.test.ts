import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DEFAULT_ENDPOINT, isTruthyEnv, resolveHubOptions } from '../../src/hub/env.js';
import { CaptureStream, makeTempDir } from './helpers.js';

let home: string;
let cleanup: () => Promise<void>;

beforeEach(async () => {
  ({ dir: home, cleanup } = await makeTempDir('hubmoe-env-'));
});
afterEach(async () => cleanup());

const tty = (): CaptureStream => new CaptureStream(true);

describe('token', () => {
  it('prefers --token, then HF_TOKEN, then HUGGING_FACE_HUB_TOKEN, then the token file', async () => {
    await mkdir(join(home, '.cache', 'huggingface'), { recursive: true });
    await writeFile(join(home, '.cache', 'huggingface', 'token'), 'hf_from_file\n');
    const env = { HF_TOKEN: 'hf_env', HUGGING_FACE_HUB_TOKEN: 'hf_legacy' };
    expect(resolveHubOptions({ token: 'hf_flag', env, homeDir: home })).toMatchObject({ token: 'hf_flag', tokenSource: 'option' });
    expect(resolveHubOptions({ env, homeDir: home })).toMatchObject({ token: 'hf_env', tokenSource: 'HF_TOKEN' });
    expect(resolveHubOptions({ env: { HUGGING_FACE_HUB_TOKEN: 'hf_legacy' }, homeDir: home })).toMatchObject({
      token: 'hf_legacy',
      tokenSource: 'HUGGING_FACE_HUB_TOKEN',
    });
    expect(resolveHubOptions({ env: {}, homeDir: home })).toMatchObject({ token: 'hf_from_file', tokenSource: 'token-file' });
  });

  it('reads the token file under HF_HOME, or HF_TOKEN_PATH', async () => {
    await mkdir(join(home, 'hfhome'), { recursive: true });
    await writeFile(join(home, 'hfhome', 'token'), '  hf_home_token  ');
    await writeFile(join(home, 'elsewhere'), 'hf_path_token');
    expect(resolveHubOptions({ env: { HF_HOME: join(home, 'hfhome') }, homeDir: home }).token).toBe('hf_home_token');
    const withPath = resolveHubOptions({ env: { HF_HOME: join(home, 'hfhome'), HF_TOKEN_PATH: join(home, 'elsewhere') }, homeDir: home });
    expect(withPath).toMatchObject({ token: 'hf_path_token', tokenPath: join(home, 'elsewhere') });
  });

  it('uses XDG_CACHE_HOME for HF_HOME when HF_HOME is unset', async () => {
    await mkdir(join(home, 'xdg', 'huggingface'), { recursive: true });
    await writeFile(join(home, 'xdg', 'huggingface', 'token'), 'hf_xdg');
    expect(resolveHubOptions({ env: { XDG_CACHE_HOME: join(home, 'xdg') }, homeDir: home }).token).toBe('hf_xdg');
  });

  it('treats empty values as unset and has no token when nothing is set', () => {
    const o = resolveHubOptions({ token: '  ', env: { HF_TOKEN: '' }, homeDir: home });
    expect(o.token).toBeUndefined();
    expect(o.tokenSource).toBe('none');
  });

  it('HF_HUB_DISABLE_IMPLICIT_TOKEN keeps only an explicit token', () => {
    const env = { HF_TOKEN: 'hf_env', HF_HUB_DISABLE_IMPLICIT_TOKEN: '1' };
    expect(resolveHubOptions({ env, homeDir: home }).token).toBeUndefined();
    expect(resolveHubOptions({ env, homeDir: home, token: 'hf_flag' }).token).toBe('hf_flag');
  });
});

describe('endpoint', () => {
  it('prefers --endpoint, then HF_ENDPOINT, then huggingface.co, without a trailing slash', () => {
    expect(resolveHubOptions({ endpoint: 'http://a.test/', env: { HF_ENDPOINT: 'http://b.test' }, homeDir: home }).endpoint).toBe('http://a.test');
    expect(resolveHubOptions({ env: { HF_ENDPOINT: 'http://b.test//' }, homeDir: home }).endpoint).toBe('http://b.test');
    expect(resolveHubOptions({ env: {}, homeDir: home }).endpoint).toBe(DEFAULT_ENDPOINT);
  });
});

describe('cache dir', () => {
  it('follows Python: --cache-dir, HF_HUB_CACHE, HUGGINGFACE_HUB_CACHE, HF_HOME/hub, XDG_CACHE_HOME/huggingface/hub, ~/.cache/huggingface/hub', () => {
    const all = {
      HF_HUB_CACHE: '/c/hub-cache',
      HUGGINGFACE_HUB_CACHE: '/c/legacy',
      HF_HOME: '/c/hf-home',
      XDG_CACHE_HOME: '/c/xdg',
    };
    expect(resolveHubOptions({ cacheDir: '/c/flag', env: all, homeDir: home }).cacheDir).toBe('/c/flag');
    expect(resolveHubOptions({ env: all, homeDir: home }).cacheDir).toBe('/c/hub-cache');
    const { HF_HUB_CACHE: _a, ...noHub } = all;
    expect(resolveHubOptions({ env: noHub, homeDir: home }).cacheDir).toBe('/c/legacy');
    const { HUGGINGFACE_HUB_CACHE: _b, ...noLegacy } = noHub;
    expect(resolveHubOptions({ env: noLegacy, homeDir: home }).cacheDir).toBe('/c/hf-home/hub');
    const { HF_HOME: _c, ...noHome } = noLegacy;
    expect(resolveHubOptions({ env: noHome, homeDir: home }).cacheDir).toBe('/c/xdg/huggingface/hub');
    expect(resolveHubOptions({ env: {}, homeDir: home }).cacheDir).toBe(join(home, '.cache', 'huggingface', 'hub'));
  });

  it('expands ~ in the variables as Python does', () => {
    expect(resolveHubOptions({ env: { HF_HOME: '~/hf' }, homeDir: home }).cacheDir).toBe(join(home, 'hf', 'hub'));
  });
});

describe('offline', () => {
  it('parses HF_HUB_OFFLINE as Python does (1/ON/YES/TRUE, any case)', () => {
    for (const v of ['1', 'ON', 'yes', 'True', ' true ']) expect(isTruthyEnv(v)).toBe(true);
    for (const v of ['0', 'off', 'no', 'false', '', '2', undefined]) expect(isTruthyEnv(v)).toBe(false);
    expect(resolveHubOptions({ env: { HF_HUB_OFFLINE: 'YES' }, homeDir: home }).offline).toBe(true);
    expect(resolveHubOptions({ env: { TRANSFORMERS_OFFLINE: '1' }, homeDir: home }).offline).toBe(true);
    expect(resolveHubOptions({ env: { HF_HUB_OFFLINE: '0' }, homeDir: home }).offline).toBe(false);
    expect(resolveHubOptions({ env: { HF_HUB_OFFLINE: '1' }, homeDir: home, offline: false }).offline).toBe(false);
  });
});

describe('progress and colour', () => {
  it('shows bars only on a terminal, unless HF_HUB_DISABLE_PROGRESS_BARS or progress: false', () => {
    expect(resolveHubOptions({ env: {}, homeDir: home, progressStream: tty() }).progress).toBe(true);
    expect(resolveHubOptions({ env: {}, homeDir: home, progressStream: new CaptureStream(false) }).progress).toBe(false);
    expect(resolveHubOptions({ env: { HF_HUB_DISABLE_PROGRESS_BARS: '1' }, homeDir: home, progressStream: tty() }).progress).toBe(false);
    expect(resolveHubOptions({ env: {}, homeDir: home, progressStream: tty(), progress: false }).progress).toBe(false);
    expect(resolveHubOptions({ env: {}, homeDir: home, progressStream: new CaptureStream(false), progress: true }).progress).toBe(false);
  });

  it('turns colour off with NO_COLOR (non-empty) or off a terminal', () => {
    expect(resolveHubOptions({ env: {}, homeDir: home, progressStream: tty() }).color).toBe(true);
    expect(resolveHubOptions({ env: { NO_COLOR: '1' }, homeDir: home, progressStream: tty() }).color).toBe(false);
    expect(resolveHubOptions({ env: { NO_COLOR: '' }, homeDir: home, progressStream: tty() }).color).toBe(true);
    expect(resolveHubOptions({ env: {}, homeDir: home, progressStream: new CaptureStream(false) }).color).toBe(false);
  });
});

describe('timeouts', () => {
  it('reads HF_HUB_ETAG_TIMEOUT and HF_HUB_DOWNLOAD_TIMEOUT in seconds, 10 by default', () => {
    expect(resolveHubOptions({ env: {}, homeDir: home })).toMatchObject({ requestTimeoutMs: 10_000, downloadTimeoutMs: 10_000 });
    expect(resolveHubOptions({ env: { HF_HUB_ETAG_TIMEOUT: '3', HF_HUB_DOWNLOAD_TIMEOUT: '60' }, homeDir: home })).toMatchObject({
      requestTimeoutMs: 3_000,
      downloadTimeoutMs: 60_000,
    });
    expect(resolveHubOptions({ env: { HF_HUB_DOWNLOAD_TIMEOUT: 'soon' }, homeDir: home }).downloadTimeoutMs).toBe(10_000);
  });
});
