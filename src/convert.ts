/**
 * convert(): a checkpoint (a local directory, or a Hub repo id) → a hubmoe model dir in the
 * transformers.js layout:
 *
 *   config.json, generation_config.json, tokenizer files, hubmoe.json,
 *   onnx/model.onnx + model.onnx_data (fp32), onnx/model_fp16.onnx + model_fp16.onnx_data (fp16)
 *
 * The dir is written under a temporary name next to `outDir` and renamed into place at the end, so a
 * failure never leaves a half-written model dir.
 */
import { mkdir, mkdtemp, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { detectConverter, converterFor } from '../converters/registry.js';
import type { SourceConfig } from '../converters/types.js';
import { HubmoeError } from './errors.js';
import { isRepoId, openHubStore } from './hub/index.js';
import { LocalDirStore, TOKENIZER_FILES, openCheckpoint } from './io/checkpoint.js';
import type { FileStore, TensorSource } from './io/checkpoint.js';
import { silentLogger } from './log.js';
import type { Logger } from './log.js';
import { buildGraph } from './onnx/build.js';
import type { FloatDType } from './onnx/graph.js';
import type { ExportTarget } from './onnx/lower/context.js';
import { moeLowering } from './onnx/lower/moe.js';
import { writeOnnx, writeOnnxSharing } from './onnx/export.js';
import { checkCanonical } from './schema/canonical.js';
import type { CanonicalTensors } from './schema/canonical.js';
import type { Activation, Family, ModelSpec } from './schema/spec.js';
import { activeParameterCount, parameterCount } from './schema/tensors.js';
import { validateSpec } from './schema/validate.js';
import { VERSION } from './version.js';

export type ConvertDType = FloatDType | 'both';

export interface SourceOptions {
  /** Force a family instead of detecting it from the config. */
  family?: Family;
  /** Hub options (used when the source is a repo id). */
  revision?: string;
  token?: string;
  endpoint?: string;
  cacheDir?: string;
  offline?: boolean;
  /** Where to take tokenizer files from when the source has none (a directory or a Hub repo id). */
  tokenizer?: string;
  /** Progress bars for downloads (default: on a terminal unless HF_HUB_DISABLE_PROGRESS_BARS). */
  progress?: boolean;
  log?: Logger;
}

export interface ConvertOptions extends SourceOptions {
  outDir: string;
  /** fp32 (CPU), fp16 (CUDA) or both; default fp32. */
  dtype?: ConvertDType;
  /** portable (built-in ONNX Runtime ops) or fused (hubmoe's custom ops); default portable. */
  target?: ExportTarget;
  /** Expert activation override (BlackMamba). */
  expertAct?: Activation;
  /** Print the plan and write nothing. */
  dryRun?: boolean;
  /** Replace an existing, non-empty outDir. */
  overwrite?: boolean;
}

export interface ConvertPlan {
  source: string;
  family: Family;
  format: string;
  files: Array<{ path: string; bytes?: number }>;
  parameters: number;
  activeParameters: number;
  blocks: Array<{ index: number; kind: string; detail: string }>;
  outputs: string[];
}

export interface ConvertResult {
  outDir: string;
  spec: ModelSpec;
  plan: ConvertPlan;
  /** Files written, relative to outDir (empty for a dry run). */
  files: string[];
}


/** An opened source: its files, config, family converter, spec and canonical tensors. */
export interface OpenedSource {
  store: FileStore;
  config: SourceConfig;
  spec: ModelSpec;
  checkpoint: TensorSource;
  tensors: CanonicalTensors;
  /** Store the tokenizer files come from (the source, or --tokenizer). */
  tokenizerStore?: FileStore;
  close(): Promise<void>;
}

async function isDirectory(p: string): Promise<boolean> {
  try {
    return (await stat(p)).isDirectory();
  } catch {
    return false;
  }
}

export async function openStore(source: string, opts: SourceOptions): Promise<FileStore> {
  if (await isDirectory(source)) return new LocalDirStore(resolve(source));
  if (isRepoId(source)) {
    return openHubStore(source, {
      revision: opts.revision,
      token: opts.token,
      endpoint: opts.endpoint,
      cacheDir: opts.cacheDir,
      offline: opts.offline,
      progress: opts.progress,
      log: opts.log,
    });
  }
  throw new HubmoeError('NOT_FOUND', `${source}: no such directory, and not a Hub repo id (owner/name)`);
}

/**
 * The tokenizer for a source that ships none (BlackMamba, the state-spaces Mamba checkpoints):
 * `--tokenizer`, else the family's known tokenizer repo — from the Hub when the source itself comes
 * from the Hub, else only if it is already in the local Hub cache (a local conversion never goes
 * online by surprise).
 */
async function fallbackTokenizer(store: FileStore, repo: string | undefined, opts: SourceOptions): Promise<FileStore | undefined> {
  const log = opts.log ?? silentLogger;
  if (!repo) return undefined;
  const remote = 'commit' in store;
  try {
    const tok = await openStore(repo, { ...opts, revision: undefined, offline: remote ? opts.offline : true });
    if (!(await tok.list()).includes('tokenizer.json')) return undefined;
    log.info(`tokenizer: ${repo} (${remote ? 'Hub' : 'local Hub cache'})`);
    return tok;
  } catch (err) {
    log.warn(
      `the source ships no tokenizer and ${repo} is ${remote ? `not reachable (${(err as Error).message})` : 'not in the local Hub cache'}; ` +
        `pass --tokenizer DIR (a folder with tokenizer.json), or convert once with ${repo} downloaded (\`hubmoe convert\` of a Hub repo fetches it)`,
    );
    return undefined;
  }
}

async function readConfig(store: FileStore): Promise<SourceConfig> {
  const files = await store.list();
  const where = `${store.label}/config.json`;
  if (!files.includes('config.json')) throw new HubmoeError('NOT_FOUND', `${store.label}: no config.json (is this a model checkpoint?)`);
  let config: unknown;
  try {
    config = JSON.parse(await store.readText('config.json'));
  } catch (err) {
    if (err instanceof HubmoeError) throw err;
    throw new HubmoeError('CORRUPT_FILE', `${where}: not valid JSON (${(err as Error).message})`);
  }
  if (config === null || typeof config !== 'object' || Array.isArray(config)) throw new HubmoeError('BAD_CONFIG', `${where}: not a JSON object`);
  return { config: config as Record<string, unknown>, where, files };
}

/** Number of ids a tokenizer.json assigns (model vocab and added tokens). */
export function tokenizerVocabSize(tokenizerJson: string): number | undefined {
  try {
    const t = JSON.parse(tokenizerJson) as { model?: { vocab?: Record<string, number> | Array<unknown> }; added_tokens?: Array<{ id: number }> };
    let max = -1;
    const vocab = t.model?.vocab;
    if (Array.isArray(vocab)) max = vocab.length - 1;
    else if (vocab) for (const id of Object.values(vocab)) max = Math.max(max, id);
    for (const a of t.added_tokens ?? []) max = Math.max(max, a.id);
    return max >= 0 ? max + 1 : undefined;
  } catch {
    return undefined;
  }
}

/** Opens a source and maps it onto the schema, checking every tensor's presence and shape. */
export async function openSource(source: string, opts: SourceOptions & { expertAct?: Activation } = {}): Promise<OpenedSource> {
  const log = opts.log ?? silentLogger;
  const store = await openStore(source, opts);
  const config = await readConfig(store);
  const converter = opts.family ? converterFor(opts.family) : detectConverter(config);
  const spec = converter.toSpec(config, { expertAct: opts.expertAct });
  log.info(`${store.label}: ${spec.family}, ${spec.blocks.length} blocks`);
  const checkpoint = await openCheckpoint(store);
  try {
    const tensors = converter.tensors(spec, checkpoint, config);
    checkCanonical(spec, tensors, store.label);
    let tokenizerStore: FileStore | undefined = config.files.includes('tokenizer.json') ? store : undefined;
    if (opts.tokenizer) tokenizerStore = await openStore(opts.tokenizer, { ...opts, revision: undefined });
    else if (!tokenizerStore) tokenizerStore = await fallbackTokenizer(store, converter.tokenizerRepo, opts);
    if (tokenizerStore) {
      const size = tokenizerVocabSize(await tokenizerStore.readText('tokenizer.json').catch(() => ''));
      if (size !== undefined && size < spec.vocab.padded_size) spec.vocab.size = size;
    }
    const hubInfo = store as FileStore & { repo?: string; revision?: string; commit?: string };
    spec.source = {
      ...spec.source,
      ...(hubInfo.repo ? { repo: hubInfo.repo, revision: hubInfo.revision, commit: hubInfo.commit } : { path: store.label }),
      format: checkpoint.format,
      files: checkpoint.files,
    };
    return { store, config, spec, checkpoint, tensors, tokenizerStore, close: () => checkpoint.close() };
  } catch (err) {
    await checkpoint.close();
    throw err;
  }
}

export function describeBlock(spec: ModelSpec, j: number): { index: number; kind: string; detail: string } {
  const op = spec.blocks[j]!.op;
  switch (op.kind) {
    case 'mamba':
      return { index: j, kind: 'mamba', detail: `d_inner ${op.d_inner}, d_state ${op.d_state}, d_conv ${op.d_conv}, dt_rank ${op.dt_rank}${op.inner_norms ? ', dt/B/C norms' : ''}${op.proj_bias ? ', projection biases' : ''}${op.conv_bias ? '' : ', no conv bias'}` };
    case 'attention':
      return { index: j, kind: 'attention', detail: `${op.heads} heads, ${op.kv_heads} KV heads, head_dim ${op.head_dim}, no positional encoding` };
    case 'mlp':
      return { index: j, kind: 'mlp', detail: `${op.hidden} wide, ${op.act}${op.glu ? ' GLU' : ''}${op.bias ? ', biases' : ''}` };
    case 'moe':
      return {
        index: j,
        kind: 'moe',
        detail: `${op.experts} experts × ${op.expert.hidden}, top-${op.top_k} ${op.router.act}${op.router.renormalize ? ' renormalised' : ''}${op.router.bias ? ', router bias' : ''}, ${op.expert.act}${op.expert.glu ? ' GLU' : ''} (${moeLowering(op)} lowering)`,
      };
  }
}

function onnxNames(dtype: ConvertDType): Array<{ dtype: FloatDType; name: string }> {
  const out: Array<{ dtype: FloatDType; name: string }> = [];
  if (dtype === 'fp32' || dtype === 'both') out.push({ dtype: 'fp32', name: 'model' });
  if (dtype === 'fp16' || dtype === 'both') out.push({ dtype: 'fp16', name: 'model_fp16' });
  return out;
}

export function planFor(opened: OpenedSource, source: string, dtype: ConvertDType, sizes: Map<string, number>): ConvertPlan {
  const { spec } = opened;
  return {
    source,
    family: spec.family,
    format: opened.checkpoint.format,
    files: opened.checkpoint.files.map((f) => ({ path: f, bytes: sizes.get(f) })),
    parameters: parameterCount(spec),
    activeParameters: activeParameterCount(spec),
    blocks: spec.blocks.map((_, j) => describeBlock(spec, j)),
    outputs: onnxNames(dtype).flatMap((o) => [`onnx/${o.name}.onnx`, `onnx/${o.name}.onnx_data`]),
  };
}

/** The config.json of a model dir: the source config plus the explicit sub-block list. */
export function modelDirConfig(spec: ModelSpec, source: Record<string, unknown>, dtypes: FloatDType[]): Record<string, unknown> {
  const names = Object.fromEntries(dtypes.map((d) => [d === 'fp32' ? 'model.onnx' : 'model_fp16.onnx', 1]));
  return {
    ...source,
    model_type: typeof source.model_type === 'string' ? source.model_type : spec.family,
    layers_block_type: spec.blocks.map((b) => b.op.kind),
    vocab_size: spec.vocab.padded_size,
    eos_token_id: spec.vocab.eos.length === 1 ? spec.vocab.eos[0] : spec.vocab.eos,
    bos_token_id: spec.vocab.bos,
    pad_token_id: spec.vocab.pad,
    hubmoe: { schema: spec.schema, family: spec.family, blocks: spec.blocks.length },
    'transformers.js_config': { dtype: dtypes[0], use_external_data_format: names },
  };
}

/** Refuses a non-empty outDir unless overwriting; creates its parent. */
export async function prepareOutDir(outDir: string, overwrite: boolean): Promise<void> {
  let entries: string[] | undefined;
  try {
    entries = await readdir(outDir);
  } catch {
    entries = undefined;
  }
  if (entries && entries.length && !overwrite) {
    throw new HubmoeError('BAD_ARGUMENT', `${outDir} exists and is not empty; choose another --out or pass --overwrite`);
  }
  await mkdir(dirname(outDir), { recursive: true });
}

export interface WriteModelDirOptions {
  dtype: ConvertDType;
  target: ExportTarget;
  overwrite?: boolean;
  log?: Logger;
  /** Extra JSON files to write into the dir (name → content). */
  extraFiles?: Record<string, unknown>;
}

/**
 * Writes an opened source as a model dir (ONNX files for each dtype, config.json,
 * generation_config.json, tokenizer files, hubmoe.json) under a temporary name, renamed into place
 * at the end. `opened.spec` is written as it is (its `export` section is set here).
 */
export async function writeModelDir(opened: OpenedSource, outDir: string, opts: WriteModelDirOptions): Promise<string[]> {
  const log = opts.log ?? silentLogger;
  const { spec } = opened;
  const outputs = onnxNames(opts.dtype);
  spec.export = { ...spec.export, target: opts.target, dtypes: outputs.map((o) => o.dtype), hubmoe_version: VERSION };
  validateSpec(spec, 'the model spec');
  await prepareOutDir(outDir, opts.overwrite ?? false);
  const tmp = await mkdtemp(join(dirname(outDir), `.${basename(outDir)}.tmp-`));
  try {
    await mkdir(join(tmp, 'onnx'));
    const files: string[] = [];
    for (const o of outputs) {
      log.info(`building ${o.dtype} ${opts.target} graph`);
      const g = buildGraph(spec, opened.tensors, { dtype: o.dtype, target: opts.target, options: spec.export.options });
      const written = await writeOnnx(g, join(tmp, 'onnx'), o.name, {
        fileOrder: opened.checkpoint.files,
        prepare: (f) => opened.checkpoint.prepare(f),
        onProgress: (done, total) => log.progress?.(`onnx/${o.name}.onnx_data`, done, total),
        producerVersion: VERSION,
        metadata: { 'hubmoe.family': spec.family, 'hubmoe.schema': spec.schema },
      });
      log.info(`wrote onnx/${o.name}.onnx (${g.nodes.length} nodes, ${written.initializers} weights, ${(written.dataBytes / 2 ** 20).toFixed(1)} MiB external data)`);
      // The static-cache graph over the same weights (hubmoe's runtime; CUDA graphs of the decode step).
      const gs = buildGraph(spec, opened.tensors, { dtype: o.dtype, target: opts.target, options: spec.export.options, staticCache: true });
      await writeOnnxSharing(gs, g, join(tmp, 'onnx'), `${o.name}_static`, o.name, { producerVersion: VERSION, metadata: { 'hubmoe.family': spec.family, 'hubmoe.schema': spec.schema, 'hubmoe.graph': 'static-cache' } });
      log.info(`wrote onnx/${o.name}_static.onnx (static-cache graph, ${gs.nodes.length} nodes, weights shared with onnx/${o.name}.onnx_data)`);
      files.push(`onnx/${o.name}.onnx`, `onnx/${o.name}.onnx_data`, `onnx/${o.name}_static.onnx`);
    }
    await writeFile(join(tmp, 'config.json'), JSON.stringify(modelDirConfig(spec, opened.config.config, outputs.map((o) => o.dtype)), null, 2) + '\n');
    files.push('config.json');
    const gen = opened.config.files.includes('generation_config.json')
      ? (JSON.parse(await opened.store.readText('generation_config.json')) as Record<string, unknown>)
      : {};
    const genConfig = { ...gen, bos_token_id: spec.vocab.bos, eos_token_id: spec.vocab.eos.length === 1 ? spec.vocab.eos[0] : spec.vocab.eos, pad_token_id: spec.vocab.pad };
    await writeFile(join(tmp, 'generation_config.json'), JSON.stringify(genConfig, null, 2) + '\n');
    files.push('generation_config.json');
    if (opened.tokenizerStore) {
      const available = await opened.tokenizerStore.list();
      for (const f of TOKENIZER_FILES) {
        if (!available.includes(f)) continue;
        await opened.tokenizerStore.prepare?.(f);
        const src = await opened.tokenizerStore.open(f);
        const data = await src.read(0, await src.size());
        await src.close();
        await writeFile(join(tmp, f), data);
        files.push(f);
      }
    } else {
      log.warn('the source has no tokenizer.json; the model dir will have none (pass --tokenizer DIR)');
    }
    for (const [name, content] of Object.entries(opts.extraFiles ?? {})) {
      await writeFile(join(tmp, name), JSON.stringify(content, null, 2) + '\n');
      files.push(name);
    }
    await writeFile(join(tmp, 'hubmoe.json'), JSON.stringify(spec, null, 2) + '\n');
    files.push('hubmoe.json');
    if (opts.overwrite) await rm(outDir, { recursive: true, force: true });
    await rename(tmp, outDir);
    return files;
  } catch (err) {
    await rm(tmp, { recursive: true, force: true });
    throw err;
  }
}

export async function convert(source: string, options: ConvertOptions): Promise<ConvertResult> {
  const log = options.log ?? silentLogger;
  const dtype = options.dtype ?? 'fp32';
  const target = options.target ?? 'portable';
  if (!['fp32', 'fp16', 'both'].includes(dtype)) throw new HubmoeError('BAD_ARGUMENT', `--dtype must be fp32, fp16 or both (got ${dtype})`);
  if (target !== 'portable' && target !== 'fused') throw new HubmoeError('BAD_ARGUMENT', `--target must be portable or fused (got ${target})`);
  const outDir = resolve(options.outDir);
  const opened = await openSource(source, options);
  try {
    const { spec } = opened;
    const sizes = new Map<string, number>();
    for (const f of opened.checkpoint.files) {
      try {
        const s = await opened.store.open(f);
        sizes.set(f, await s.size());
        await s.close();
      } catch {
        // sizes are informational
      }
    }
    const plan = planFor(opened, source, dtype, sizes);
    spec.export = { target, dtypes: onnxNames(dtype).map((o) => o.dtype), hubmoe_version: VERSION, ...(options.expertAct ? { options: { expert_act: options.expertAct } } : {}) };
    validateSpec(spec, 'the converted spec');
    if (options.dryRun) return { outDir, spec, plan, files: [] };

    const files = await writeModelDir(opened, outDir, { dtype, target, overwrite: options.overwrite, log });
    return { outDir, spec, plan, files };
  } finally {
    await opened.close();
  }
}
