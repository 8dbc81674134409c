#!/usr/bin/env node
// A static server for the browser example: the page, transformers.js's browser bundle,
// onnxruntime-web's WASM files, the compiled hubmoe/transformers plugin, and hubmoe model dirs.
//
//   npm run build                                      # compiles the plugin into dist/
//   npx hubmoe convert fixtures/jamba-demo/checkpoint --out /tmp/jamba-demo
//   node examples/browser/serve.mjs /tmp/jamba-demo    # then open the printed URL
//
// Model dirs are served as /models/<name>/ (name = the dir's base name, or name=DIR).
import { createReadStream } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { createServer } from 'node:http';
import { basename, extname, join, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = resolve(fileURLToPath(new URL('../..', import.meta.url)));

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.wasm': 'application/wasm',
  '.map': 'application/json; charset=utf-8',
};

/** The file under `base` that `rest` names, or undefined when it would leave `base`. */
function inside(base, rest) {
  const file = resolve(base, '.' + sep + decodeURIComponent(rest));
  return file === base || file.startsWith(base + sep) ? file : undefined;
}

let ts;
async function transpiled(file) {
  ts ??= (await import('typescript')).default;
  const source = await readFile(file, 'utf8');
  return ts.transpileModule(source, {
    fileName: file,
    compilerOptions: { module: ts.ModuleKind.ES2022, target: ts.ScriptTarget.ES2022, verbatimModuleSyntax: false },
  }).outputText;
}

/**
 * Starts the server. `models` maps names to model dirs; `plugin` is 'dist' (the compiled package,
 * as users get it) or 'src' (hubmoe's TypeScript sources, compiled per request: for tests).
 */
export async function startExampleServer({ models = {}, plugin = 'dist', host = '127.0.0.1', port = 0, root = REPO } = {}) {
  const routes = [
    ['/vendor/transformers/', join(root, 'node_modules/@huggingface/transformers/dist')],
    ['/vendor/ort/', join(root, 'node_modules/onnxruntime-web/dist')],
    ['/vendor/hubmoe/', join(root, plugin === 'src' ? 'src' : 'dist/src')],
    ...Object.entries(models).map(([name, dir]) => [`/models/${name}/`, resolve(dir)]),
    ['/', join(root, 'examples/browser')],
  ];
  const log = [];
  const server = createServer(async (req, res) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    const send = (status, body, type = 'text/plain; charset=utf-8') => {
      log.push({ path, status });
      res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
      res.end(body);
    };
    try {
      const [prefix, base] = routes.find(([p]) => path.startsWith(p)) ?? [];
      let file = base && inside(resolve(base), path.slice(prefix.length) || 'index.html');
      if (!file) return send(404, 'not found');
      if (prefix === '/vendor/hubmoe/' && plugin === 'src' && file.endsWith('.js')) {
        return send(200, await transpiled(file.slice(0, -3) + '.ts'), TYPES['.js']);
      }
      const info = await stat(file).catch(() => undefined);
      if (info?.isDirectory()) file = join(file, 'index.html');
      const size = info?.isDirectory() ? (await stat(file).catch(() => undefined))?.size : info?.size;
      if (size === undefined) return send(404, 'not found');
      log.push({ path, status: 200 });
      res.writeHead(200, { 'content-type': TYPES[extname(file)] ?? 'application/octet-stream', 'content-length': size, 'cache-control': 'no-store' });
      createReadStream(file).pipe(res);
    } catch (err) {
      send(500, String(err));
    }
  });
  await new Promise((ok, fail) => server.listen(port, host, ok).once('error', fail));
  const address = server.address();
  return {
    url: `http://${host}:${address.port}/`,
    log,
    close: () => new Promise((ok) => server.close(() => ok())),
  };
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  let port = 8080;
  const models = {};
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--port') port = Number(args[++i]);
    else if (args[i].includes('=')) {
      const [name, dir] = args[i].split(/=(.*)/s);
      models[name] = dir;
    } else models[basename(resolve(args[i]))] = args[i];
  }
  const { url } = await startExampleServer({ models, port });
  const first = Object.keys(models)[0];
  console.log(`serving on ${url}${first ? ` (models: ${Object.keys(models).join(', ')})` : ' (no model dirs given)'}`);
}
