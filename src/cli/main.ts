/**
 * The hubmoe command line: `hubmoe <verb> <repo-or-dir>`. Thin: parses options and calls the
 * library. stdout carries only the result (a path, text, or JSON with --json); exit 0 on success,
 * 1 on an error, 2 on a usage error.
 */
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import yargs from 'yargs';
import type { Argv } from 'yargs';
import { hideBin } from 'yargs/helpers';
import { convert } from '../convert.js';
import { publish } from '../hub/index.js';
import { doctor, formatDoctor } from '../doctor.js';
import { init } from '../init.js';
import type { ConvertDType } from '../convert.js';
import { HubmoeError, fileError } from '../errors.js';
import { encodeCorpus } from '../../runtime/tokenizer.js';
import { formatInspect, inspect } from '../inspect.js';
import { ACTIVATIONS, FAMILIES, SCAP_LAYER_TYPES } from '../schema/spec.js';
import { readFile } from 'node:fs/promises';
import type { Activation, Family, ScapSpec } from '../schema/spec.js';
import { PACKAGE_ROOT, VERSION } from '../version.js';
import { graphChoice, loadModel } from '../../runtime/model.js';
import type { TextGenerateOptions } from '../../runtime/model.js';
import { cliLogger, colour } from './output.js';
import { prune } from '../scap/prune.js';
import { formatSites, formatSparsity, sparsityBySite, sparsityByType, typeSummary } from '../scap/report.js';

class UsageError extends Error {}

function out(text: string): void {
  process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
}

function hubOptions<T>(y: Argv<T>) {
  return y
    .option('revision', { type: 'string', describe: 'Hub branch, tag or commit (default: main)' })
    .option('token', { type: 'string', describe: 'Hub token (default: HF_TOKEN or the saved login)' })
    .option('endpoint', { type: 'string', describe: 'Hub endpoint (default: HF_ENDPOINT or https://huggingface.co)' })
    .option('cache-dir', { type: 'string', describe: 'Hub cache folder (default: HF_HUB_CACHE, or HF_HOME/hub)' })
    .option('offline', { type: 'boolean', describe: 'use the Hub cache only (also HF_HUB_OFFLINE=1)' })
    .option('progress', { type: 'boolean', describe: 'progress bars on stderr (--no-progress to hide; also HF_HUB_DISABLE_PROGRESS_BARS)' })
    .option('family', { choices: FAMILIES, describe: 'skip detection and read the source as this family' })
    .option('tokenizer', { type: 'string', describe: 'take tokenizer files from this dir or Hub repo when the source has none' });
}

function sourceOptions(a: Record<string, unknown>, quiet = false) {
  return {
    revision: a.revision as string | undefined,
    token: a.token as string | undefined,
    endpoint: a.endpoint as string | undefined,
    cacheDir: a['cache-dir'] as string | undefined,
    offline: a.offline as boolean | undefined,
    progress: a.progress as boolean | undefined,
    family: a.family as Family | undefined,
    tokenizer: a.tokenizer as string | undefined,
    log: cliLogger({ quiet }),
  };
}

function sampling(y: Argv) {
  return y
    .option('max-new-tokens', { type: 'number', default: 32, describe: 'tokens to generate' })
    .option('temperature', { type: 'number', describe: 'sampling temperature (0 or unset: greedy)' })
    .option('top-k', { type: 'number', describe: 'sample from the k most likely tokens' })
    .option('top-p', { type: 'number', describe: 'sample from the smallest set with this probability mass' })
    .option('repetition-penalty', { type: 'number', describe: 'penalise tokens already present (> 1)' })
    .option('seed', { type: 'number', describe: 'random seed for sampling' })
    .option('stop', { type: 'string', array: true, describe: 'stop when this text appears (repeatable)' })
    .option('device', { choices: ['cpu', 'cuda'] as const, default: 'cpu' as const, describe: 'where to run' })
    .option('graph', {
      choices: ['auto', 'dynamic', 'static', 'cuda-graph'] as const,
      default: 'auto' as const,
      describe: 'the dynamic graph, the static-cache graph, or that graph with CUDA-graph decode steps (auto: CUDA graphs for fused models on CUDA)',
    });
}

function generateOptions(a: Record<string, unknown>): TextGenerateOptions {
  return {
    maxNewTokens: a['max-new-tokens'] as number,
    temperature: a.temperature as number | undefined,
    topK: a['top-k'] as number | undefined,
    topP: a['top-p'] as number | undefined,
    repetitionPenalty: a['repetition-penalty'] as number | undefined,
    seed: a.seed as number | undefined,
    stop: a.stop as string[] | undefined,
  };
}

async function runGenerate(dir: string, prompt: string, a: Record<string, unknown>, json: boolean): Promise<void> {
  const model = await loadModel(dir, { device: a.device as 'cpu' | 'cuda', ...graphChoice(a.graph as string | undefined) });
  try {
    const opts = generateOptions(a);
    if (json) {
      const [text] = await model.generateText(prompt, opts);
      out(JSON.stringify({ prompt, text }));
    } else {
      await model.generateText(prompt, { ...opts, onText: (_row, piece) => process.stdout.write(piece) });
      process.stdout.write('\n');
    }
  } finally {
    await model.dispose();
  }
}

/** Per layer type: sites, target, sparsity on the calibration tokens, and on the --ppl text when measured. */
function byType(scap: ScapSpec): string {
  const achieved = scap.evaluation?.achieved;
  const lines = [`layer type    sites  target  calibration${achieved ? '  evaluation' : ''}`];
  const pct = (x: number, w: number): string => `${(100 * x).toFixed(1).padStart(w)} %`;
  for (const t of typeSummary(scap)) {
    const ev = achieved?.[t.type];
    lines.push(`${t.type.padEnd(13)} ${String(t.sites).padStart(5)}  ${pct(t.target, 4)}  ${pct(t.calibration, 9)}${ev !== undefined ? `  ${pct(ev, 8)}` : ''}`);
  }
  return lines.join('\n');
}

export function buildCli(argv: string[]) {
  return yargs(argv)
    .scriptName('hubmoe')
    .version(VERSION)
    .usage('$0 <command> [options]')
    .command(
      'convert <source>',
      'convert a checkpoint (local dir or Hub repo id) to an ONNX model dir',
      (y) =>
        hubOptions(y)
          .positional('source', { type: 'string', demandOption: true, describe: 'checkpoint dir or Hub repo id' })
          .option('out', { type: 'string', demandOption: true, describe: 'output model dir' })
          .option('dtype', { choices: ['fp32', 'fp16', 'both'] as const, default: 'fp32' as const, describe: 'fp32 for CPU, fp16 for CUDA' })
          .option('target', { choices: ['portable', 'fused'] as const, default: 'portable' as const, describe: 'built-in ONNX Runtime ops, or hubmoe\'s fused ops' })
          .option('expert-act', { choices: ACTIVATIONS, describe: 'override the expert activation (BlackMamba: silu for the paper\'s SwiGLU)' })
          .option('dry-run', { type: 'boolean', default: false, describe: 'print the plan, write nothing' })
          .option('overwrite', { type: 'boolean', default: false, describe: 'replace a non-empty --out' })
          .option('json', { type: 'boolean', default: false, describe: 'print the result as JSON' }),
      async (a) => {
        const res = await convert(a.source, {
          ...sourceOptions(a),
          outDir: a.out,
          dtype: a.dtype as ConvertDType,
          target: a.target,
          expertAct: a['expert-act'] as Activation | undefined,
          dryRun: a['dry-run'],
          overwrite: a.overwrite,
        });
        if (a.json) out(JSON.stringify(a['dry-run'] ? { plan: res.plan } : { outDir: res.outDir, files: res.files, spec: res.spec }, null, 2));
        else if (a['dry-run']) {
          out(formatInspect({ kind: 'checkpoint', spec: res.spec, plan: res.plan }));
          out(`\nwould write to ${res.outDir}: ${res.plan.outputs.join(', ')}, config.json, hubmoe.json`);
        } else out(res.outDir);
      },
    )
    .command(
      'publish <dir> <repo>',
      'upload a converted model dir to the Hub in one commit, with a model card',
      (y) =>
        y
          .positional('dir', { type: 'string', demandOption: true, describe: 'model dir written by convert' })
          .positional('repo', { type: 'string', demandOption: true, describe: 'Hub repo id (owner/name)' })
          .option('private', { type: 'boolean', default: false, describe: 'create the repo private' })
          .option('branch', { type: 'string', describe: 'target branch (created when missing; default main)' })
          .option('create-pr', { type: 'boolean', default: false, describe: 'open a pull request instead of committing' })
          .option('commit-message', { type: 'string', describe: 'commit title' })
          .option('license', { type: 'string', describe: 'license id for the model card' })
          .option('dry-run', { type: 'boolean', default: false, describe: 'list what would be uploaded; change nothing' })
          .option('token', { type: 'string', describe: 'Hub token with write access (default: HF_TOKEN or the saved login)' })
          .option('endpoint', { type: 'string', describe: 'Hub endpoint (default: HF_ENDPOINT or https://huggingface.co)' })
          .option('json', { type: 'boolean', default: false }),
      async (a) => {
        const log = cliLogger();
        const res = await publish(a.dir, a.repo, {
          private: a.private,
          branch: a.branch,
          createPr: a['create-pr'],
          commitMessage: a['commit-message'],
          license: a.license,
          dryRun: a['dry-run'],
          token: a.token,
          endpoint: a.endpoint,
          log,
        });
        if (a.json) out(JSON.stringify(res, null, 2));
        else out(res.prUrl ?? res.commitUrl ?? `https://huggingface.co/${a.repo}`);
      },
    )
    .command(
      'init',
      'write a randomly initialised checkpoint (MoE-Mamba publishes no weights) in the BlackMamba layout',
      (y) =>
        y
          .option('family', { choices: ['moe-mamba', 'blackmamba'] as const, default: 'moe-mamba' as const, describe: 'routing: moe-mamba = softmax top-1, blackmamba = sigmoid top-1' })
          .option('out', { type: 'string', demandOption: true, describe: 'checkpoint dir to write' })
          .option('config', { type: 'string', describe: 'a config.json in the BlackMamba layout to start from' })
          .option('hidden', { type: 'number', describe: 'hidden size (default 512)' })
          .option('layers', { type: 'number', describe: 'blocks, alternating Mamba and MoE (default 8)' })
          .option('experts', { type: 'number', describe: 'experts per MoE block, 1-9 (the layout reads one digit; default 8)' })
          .option('ffn', { type: 'number', describe: 'expert width (default 1536)' })
          .option('vocab', { type: 'number', describe: 'vocabulary rows (default 50304)' })
          .option('seed', { type: 'number', default: 0 })
          .option('dtype', { choices: ['fp32', 'bf16'] as const, default: 'fp32' as const })
          .option('overwrite', { type: 'boolean', default: false })
          .option('json', { type: 'boolean', default: false }),
      async (a) => {
        const config: Record<string, unknown> = a.config ? (JSON.parse(await readFile(a.config, 'utf-8')) as Record<string, unknown>) : {};
        if (a.hidden !== undefined) config.hidden_size = a.hidden;
        if (a.ffn !== undefined) config.ffn_hidden_size = a.ffn;
        if (a.vocab !== undefined) config.vocab_size = a.vocab;
        if (a.layers !== undefined || a.experts !== undefined) {
          const experts = a.experts ?? 8;
          if (!Number.isInteger(experts) || experts < 1 || experts > 9) {
            throw new HubmoeError('BAD_ARGUMENT', `--experts must be 1-9: the BlackMamba layout (mamba_moe_layers) records an expert count in one digit (got ${experts})`);
          }
          const layers = a.layers ?? 8;
          config.num_layers = layers;
          config.mamba_moe_layers = Array.from({ length: layers }, (_, i) => (i % 2 === 0 ? 'r' : String(experts)));
        }
        const res = await init({ family: a.family, outDir: a.out, config, seed: a.seed, dtype: a.dtype, overwrite: a.overwrite });
        out(a.json ? JSON.stringify(res, null, 2) : res.outDir);
      },
    )
    .command(
      'generate <dir>',
      'generate text with a converted model',
      (y) =>
        sampling(y)
          .positional('dir', { type: 'string', demandOption: true, describe: 'model dir written by convert' })
          .option('prompt', { type: 'string', demandOption: true, describe: 'prompt text' })
          .option('json', { type: 'boolean', default: false, describe: 'print {prompt, text} as JSON' }),
      async (a) => runGenerate(a.dir, a.prompt, a as Record<string, unknown>, a.json),
    )
    .command(
      'inspect <source>',
      'show family, parameters and the block table of a checkpoint or model dir',
      (y) =>
        hubOptions(y)
          .positional('source', { type: 'string', demandOption: true })
          .option('json', { type: 'boolean', default: false }),
      async (a) => {
        const res = await inspect(a.source, sourceOptions(a, true));
        out(a.json ? JSON.stringify(res, null, 2) : formatInspect(res));
      },
    )
    .command(
      'doctor',
      'report what this installation can run (CPU, CUDA, native backend, custom ops) and how to get what is missing',
      (y) => y.option('json', { type: 'boolean', default: false }),
      async (a) => {
        const report = doctor();
        out(a.json ? JSON.stringify(report, null, 2) : formatDoctor(report));
      },
    )
    .command(
      'eval <dir>',
      'perplexity of a model on a text file',
      (y) =>
        y
          .positional('dir', { type: 'string', demandOption: true, describe: 'model dir written by convert' })
          .option('ppl', { type: 'string', demandOption: true, describe: 'a UTF-8 text file' })
          .option('window', { type: 'number', default: 256, describe: 'tokens per window' })
          .option('device', { choices: ['cpu', 'cuda'] as const, default: 'cpu' as const })
          .option('sites', { type: 'boolean', default: false, describe: 'pruned models: the sparsity reached at every site, not only per layer type' })
          .option('json', { type: 'boolean', default: false }),
      async (a) => {
        const log = cliLogger();
        const model = await loadModel(a.dir, { device: a.device });
        try {
          if (!model.tokenizer) throw new HubmoeError('NOT_FOUND', `${a.dir}: the model dir has no tokenizer.json; perplexity on text needs one`);
          let text: string;
          try {
            text = await readFile(a.ppl, 'utf-8');
          } catch (err) {
            throw fileError(a.ppl, err);
          }
          const ids = encodeCorpus(model.tokenizer, text);
          const res = await model.perplexity(ids, { window: a.window, onProgress: (done, total) => log.progress?.('windows', done, total) });
          // The fused target's SparseLinear and MoE ops prune without counting; the portable graph counts.
          const scap = model.spec.export?.target === 'fused' ? undefined : model.spec.scap;
          const sparsity = scap ? sparsityByType(scap, model.scapStats()) : undefined;
          const sites = scap ? sparsityBySite(scap, model.scapStats()) : undefined;
          if (a.json) out(JSON.stringify({ file: a.ppl, window: a.window, ...res, ...(sparsity ? { sparsity, sites } : {}) }));
          else {
            out(`perplexity ${res.perplexity.toFixed(3)} over ${res.tokens} tokens (${a.ppl})`);
            if (sparsity) out(formatSparsity(sparsity));
            if (sites && a.sites) out(formatSites(sites));
            if (model.spec.scap && !scap) out('achieved sparsity: not counted by the fused target\'s operators; prune with --target portable to measure it');
          }
        } finally {
          await model.dispose();
        }
      },
    )
    .command(
      'prune <dir>',
      'SCAP activation pruning: calibrate per-layer thresholds on a text and write a pruned model dir',
      (y) =>
        y
          .positional('dir', { type: 'string', demandOption: true, describe: 'model dir written by convert' })
          .option('out', { type: 'string', demandOption: true, describe: 'pruned model dir to write' })
          .option('calib', { type: 'string', demandOption: true, describe: 'calibration text (UTF-8)' })
          .option('calib-tokens', { type: 'number', default: 16384, describe: 'calibration tokens' })
          .option('window', { type: 'number', default: 256, describe: 'tokens per calibration window' })
          .option('sparsity', { type: 'string', demandOption: true, describe: `target sparsity: "0.4", or "all=0.4,mamba_out=0.55" (types: ${SCAP_LAYER_TYPES.join(', ')})` })
          .option('mode-centering', { choices: ['auto', 'off'] as const, default: 'auto' as const, describe: 'shift each input by its mode before thresholding, where that moves the layer output less' })
          .option('method', { choices: ['scap', 'teal'] as const, default: 'scap' as const, describe: 'scap (sequential, mode-centred) or teal (magnitude thresholds of the dense model)' })
          .option('ppl', { type: 'string', describe: 'a text to measure dense and pruned perplexity and the achieved sparsity on' })
          .option('dtype', { choices: ['fp32', 'fp16', 'both'] as const, describe: 'ONNX dtypes to write (default: those of the dense model dir)' })
          .option('target', { choices: ['portable', 'fused'] as const, describe: 'export target of the pruned model (default: that of the dense model dir); fused runs hubmoe\'s SparseLinear op' })
          .option('overwrite', { type: 'boolean', default: false, describe: 'replace a non-empty --out' })
          .option('token', { type: 'string', describe: 'Hub token, when the model\'s source is a Hub repo' })
          .option('endpoint', { type: 'string', describe: 'Hub endpoint' })
          .option('cache-dir', { type: 'string', describe: 'Hub cache folder' })
          .option('offline', { type: 'boolean', describe: 'use the Hub cache only' })
          .option('json', { type: 'boolean', default: false }),
      async (a) => {
        const log = cliLogger();
        const res = await prune(a.dir, {
          outDir: a.out,
          calib: a.calib,
          calibTokens: a['calib-tokens'],
          window: a.window,
          sparsity: a.sparsity,
          modeCentering: a['mode-centering'],
          method: a.method,
          ppl: a.ppl,
          dtype: a.dtype as ConvertDType | undefined,
          target: a.target,
          overwrite: a.overwrite,
          hub: { token: a.token, endpoint: a.endpoint, cacheDir: a['cache-dir'], offline: a.offline },
          log,
        });
        if (a.json) {
          out(JSON.stringify({ outDir: res.outDir, scap: res.spec.scap }, null, 2));
          return;
        }
        out(res.outDir);
        log.info(`\n${byType(res.spec.scap!)}`);
        if (res.evaluation) {
          const e = res.evaluation;
          log.info(`perplexity on ${e.file} (${e.tokens} tokens): dense ${e.dense.toFixed(3)}, pruned ${e.pruned.toFixed(3)} (${(100 * (e.pruned / e.dense - 1)).toFixed(2)} %)`);
        }
      },
    )
    .command(
      'demo',
      'convert the bundled tiny Jamba (trained on the Brown corpus) and generate from a prompt on CPU',
      (y) =>
        sampling(y)
          .option('prompt', { type: 'string', default: 'The jury said', describe: 'prompt text' })
          .option('out', { type: 'string', describe: 'where to write the model dir (default: a temp dir)' }),
      async (a) => {
        const log = cliLogger();
        const outDir = a.out ?? join(tmpdir(), `hubmoe-demo-${VERSION}`);
        const source = join(PACKAGE_ROOT, 'fixtures', 'brown', 'jamba', 'checkpoint');
        log.info(`converting the bundled tiny Jamba checkpoint (${source}; 1.9 M parameters trained on the Brown corpus)`);
        await convert(source, { outDir, overwrite: true, log });
        log.info(`model dir: ${outDir}`);
        log.info(colour(2, `prompt: ${a.prompt}`));
        // A small model reads best sampled: unless told otherwise, temperature 0.8, top-p 0.9.
        const sampled = a.temperature === undefined ? { ...a, temperature: 0.8, 'top-p': a['top-p'] ?? 0.9 } : a;
        await runGenerate(outDir, a.prompt, sampled as Record<string, unknown>, false);
      },
    )
    .demandCommand(1, 'name a command')
    .strict()
    .help()
    .fail((msg, err) => {
      if (err) throw err;
      throw new UsageError(msg);
    });
}

export async function main(argv = hideBin(process.argv)): Promise<number> {
  try {
    await buildCli(argv).parseAsync();
    return 0;
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`hubmoe: ${err.message}\nRun 'hubmoe --help' for usage.\n`);
      return 2;
    }
    if (err instanceof HubmoeError) {
      process.stderr.write(`${colour(31, 'hubmoe: error:')} ${err.message}\n`);
      return 1;
    }
    process.stderr.write(`${colour(31, 'hubmoe: unexpected error:')} ${(err as Error)?.stack ?? String(err)}\n`);
    return 1;
  }
}
