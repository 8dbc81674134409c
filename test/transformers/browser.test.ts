/**
 * The browser example (examples/browser) in headless Chromium: the page loads converted hubmoe
 * model dirs with transformers.js's browser bundle and onnxruntime-web, and generates the reference
 * implementation's greedy tokens — on the WASM backend and, where Chromium offers a WebGPU adapter
 * (SwiftShader, a CPU implementation of Vulkan), on the WebGPU backend. Everything is served from
 * 127.0.0.1; the test fails if the page asks for anything else.
 *
 * Needs Debian's chromium (/usr/bin/chromium, or HUBMOE_CHROMIUM); .ci/run installs it. Without
 * it the suite is skipped with the reason in the test name.
 */
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import type { BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startExampleServer } from '../../examples/browser/serve.mjs';
import type { ExampleServer } from '../../examples/browser/serve.mjs';
import { loadModel } from '../../runtime/model.js';
import { tempDir } from '../helpers.js';
import { convertFixture, greedyReference } from './helpers.js';

const CHROMIUM = process.env.HUBMOE_CHROMIUM ?? '/usr/bin/chromium';
const HAVE_CHROMIUM = existsSync(CHROMIUM);
const SKIP_REASON = `SKIPPED: no Chromium at ${CHROMIUM}. Install Debian's chromium (apt-get install -y --no-install-recommends chromium) or set HUBMOE_CHROMIUM; .ci/run installs it`;
if (!HAVE_CHROMIUM) {
  console.error(`\n${'!'.repeat(100)}\n!! browser.test.ts ${SKIP_REASON}\n${'!'.repeat(100)}\n`);
}

const BASE_ARGS = ['--headless', '--no-sandbox', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const WASM_ARGS = [...BASE_ARGS, '--disable-gpu'];
// WebGPU without a GPU: Chromium's SwiftShader Vulkan adapter.
const WEBGPU_ARGS = [...BASE_ARGS, '--enable-unsafe-webgpu', '--use-webgpu-adapter=swiftshader', '--enable-features=Vulkan', '--use-angle=swiftshader'];

const MODELS = ['jamba-demo', 'blackmamba-glu-bias', 'mamba-hf'] as const;

interface PageResult {
  ok: boolean;
  tokens?: number[];
  text?: string;
  error?: string;
  installation?: { installed: boolean; version: string };
}

interface Browser {
  context: BrowserContext;
  page: Page;
  foreign: string[];
  errors: string[];
  close(): Promise<void>;
}

async function launch(server: ExampleServer, args: string[]): Promise<Browser> {
  const profile = await mkdtemp(join(tmpdir(), 'hubmoe-chromium-'));
  const context = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, headless: true, args });
  const page = context.pages()[0] ?? (await context.newPage());
  const foreign: string[] = [];
  const errors: string[] = [];
  page.on('request', (req) => {
    const url = req.url();
    if (!url.startsWith(server.url) && !url.startsWith('data:') && !url.startsWith('blob:')) foreign.push(url);
  });
  page.on('pageerror', (err) => errors.push(err.message));
  return {
    context,
    page,
    foreign,
    errors,
    close: async () => {
      await context.close();
      await rm(profile, { recursive: true, force: true });
    },
  };
}

async function run(browser: Browser, server: ExampleServer, query: Record<string, string>): Promise<PageResult> {
  await browser.page.goto(`${server.url}?${new URLSearchParams(query)}`);
  await browser.page.waitForFunction(() => (window as unknown as { hubmoeResult?: unknown }).hubmoeResult !== undefined, null, { timeout: 100_000 });
  const result = await browser.page.evaluate(() => (window as unknown as { hubmoeResult: unknown }).hubmoeResult);
  return result as PageResult;
}

describe.skipIf(!HAVE_CHROMIUM)('browser example in headless Chromium', () => {
  let server: ExampleServer;
  let dirs: Record<string, string>;

  beforeAll(async () => {
    const root = await tempDir('hubmoe-tjs-browser-');
    dirs = {};
    for (const name of MODELS) dirs[name] = await convertFixture(name, root);
    // plugin 'src': the page imports hubmoe/transformers compiled from src/ per request, so the test
    // sees the sources under test without a build; users serve dist/ (npm run build).
    server = await startExampleServer({ models: dirs, plugin: 'src' });
  });
  afterAll(async () => {
    await server?.close();
  });

  describe('WASM backend', () => {
    let browser: Browser;
    beforeAll(async () => {
      browser = await launch(server, WASM_ARGS);
    });
    afterAll(async () => {
      await browser?.close();
    });

    for (const name of MODELS) {
      it(`${name}: greedy tokens equal the reference`, async () => {
        const ref = await greedyReference(name);
        const result = await run(browser, server, { model: name, device: 'wasm', ids: ref.prompt.join(','), n: String(ref.tokens.length) });
        expect(result.error).toBeUndefined();
        expect(result.installation).toMatchObject({ installed: true, version: '4.3.2' });
        expect(result.tokens).toEqual(ref.tokens);
      });
    }

    it('the pipeline with TextStreamer generates the text hubmoe generates in Node', async () => {
      const prompt = 'The jury said';
      const result = await run(browser, server, { model: 'jamba-demo', device: 'wasm', prompt, n: '16' });
      expect(result.error).toBeUndefined();
      const model = await loadModel(dirs['jamba-demo']!, { threads: 1 });
      try {
        const [text] = await model.generateText(prompt, { maxNewTokens: 16, ignoreEos: true });
        const own = await model.generate([model.tokenizer!.encode(prompt, true)], { maxNewTokens: 16, ignoreEos: true });
        expect(result.tokens).toEqual(own.tokens[0]);
        expect(result.text).toBe(text);
        // The page's output element holds what TextStreamer streamed.
        expect(await browser.page.locator('#output').textContent()).toBe(text);
      } finally {
        await model.dispose();
      }
    });

    it('fetched nothing from outside 127.0.0.1 and raised no page errors', () => {
      expect(browser.foreign).toEqual([]);
      expect(browser.errors).toEqual([]);
    });
  });

  describe('WebGPU backend (SwiftShader)', () => {
    let browser: Browser;
    let adapter: string | null = null;
    beforeAll(async () => {
      browser = await launch(server, WEBGPU_ARGS);
      await browser.page.goto(`${server.url}favicon.ico`);
      adapter = await browser.page.evaluate(async () => {
        const gpu = (navigator as unknown as { gpu?: { requestAdapter(): Promise<{ info?: { vendor: string; architecture: string } } | null> } }).gpu;
        const a = gpu ? await gpu.requestAdapter() : null;
        return a ? `${a.info?.vendor ?? '?'}/${a.info?.architecture ?? '?'}` : null;
      });
      if (!adapter) console.error('\n!! browser.test.ts: Chromium offers no WebGPU adapter here; the WebGPU case only checks that the page reports it\n');
    });
    afterAll(async () => {
      await browser?.close();
    });

    it('jamba-demo: greedy tokens equal the reference', async () => {
      const ref = await greedyReference('jamba-demo');
      const result = await run(browser, server, { model: 'jamba-demo', device: 'webgpu', ids: ref.prompt.join(','), n: String(ref.tokens.length) });
      if (!adapter) {
        expect(result.ok).toBe(false);
        return;
      }
      expect(result.error).toBeUndefined();
      expect(result.tokens).toEqual(ref.tokens);
      expect(browser.foreign).toEqual([]);
    });
  });
});

if (!HAVE_CHROMIUM) {
  describe('browser example', () => {
    it.skip(SKIP_REASON, () => {});
  });
}
