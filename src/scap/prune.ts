/**
 * prune(): SCAP activation pruning of a converted model (research/scap.md, docs/scap.md).
 *
 * 1. The model's source checkpoint is re-opened and a calibration graph built: every sparsifiable
 *    FC input ("site") takes its mode and threshold as graph inputs and exposes its raw input as an
 *    output.
 * 2. Sites are calibrated in graph order, block by block, on calibration tokens already pruned by
 *    every site calibrated before (SCAP's sequential calibration): the mode m is 0, or (mode
 *    centering "auto") the candidate among 0, the median and three KDE peaks whose pruning moves the
 *    layer's output least; the threshold t is the target-sparsity quantile of |x − m|.
 *    method "teal": m = 0 and thresholds from the dense model's activations, all in one pass (the
 *    plain magnitude baseline).
 * 3. The pruned model dir is exported with the sites' (m, t) in hubmoe.json (`scap`) and
 *    scap_config.json; the exporter folds m·W·1 into each reading layer's bias (a new initializer
 *    `<weight>.scap_bias`, named in the site's `bias`).
 */
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import ort from 'onnxruntime-node';
import { openSource, prepareOutDir, writeModelDir } from '../convert.js';
import type { ConvertDType, SourceOptions } from '../convert.js';
import { HubmoeError, fileError } from '../errors.js';
import { silentLogger } from '../log.js';
import type { Logger } from '../log.js';
import { buildGraph, cacheSpecs } from '../onnx/build.js';
import type { ExportTarget } from '../onnx/lower/context.js';
import { writeOnnx } from '../onnx/export.js';
import { SCAP_LAYER_TYPES, scapBiasName, scapInput, scapModeInput, scapThresholdInput } from '../onnx/lower/scap.js';
import type { ScapLowering } from '../onnx/lower/scap.js';
import { readExpert, readWhole } from '../schema/canonical.js';
import type { CanonicalTensors } from '../schema/canonical.js';
import { loadSpec } from '../schema/load.js';
import type { Activation, ModelSpec, ScapLayerType, ScapSiteSpec, ScapSpec } from '../schema/spec.js';
import { VERSION } from '../version.js';
import { loadModel } from '../../runtime/model.js';
import { encodeCorpus, loadTokenizer } from '../../runtime/tokenizer.js';
import { sparsityByType } from './report.js';
import { absShifted, modeCandidates, pruningError, quantile } from './stats.js';

export interface PruneOptions {
  outDir: string;
  /** Calibration text (UTF-8). */
  calib: string;
  /** Calibration tokens (default 16384 = 64 windows of 256, as SCAP). */
  calibTokens?: number;
  window?: number;
  /** Target sparsity: "0.4" (every site), or "type=s,…" with types mamba_in, mamba_out, attn_qkv, attn_o, mlp_up, mlp_down, expert_up, expert_down, or all=s. */
  sparsity: string;
  modeCentering?: 'auto' | 'off';
  method?: 'scap' | 'teal';
  /** A text to measure dense and pruned perplexity on (recorded in hubmoe.json). */
  ppl?: string;
  dtype?: ConvertDType;
  /** Export target of the pruned model (default: the dense model dir's). */
  target?: ExportTarget;
  overwrite?: boolean;
  /** Hub options for re-reading a source that is a repo id. */
  hub?: Pick<SourceOptions, 'token' | 'endpoint' | 'cacheDir' | 'offline' | 'progress'>;
  threads?: number;
  log?: Logger;
}

export interface PruneSiteReport {
  site: string;
  type: ScapLayerType;
  target: number;
  calibration: number;
  mode: number;
  threshold: number;
}

export interface PruneResult {
  outDir: string;
  spec: ModelSpec;
  sites: PruneSiteReport[];
  evaluation?: ScapSpec['evaluation'];
}

/** "0.4" → every type 0.4; "all=0.3,mamba_out=0.5" → per type. */
export function parseSparsity(specText: string): Record<ScapLayerType, number> {
  const out = Object.fromEntries(SCAP_LAYER_TYPES.map((t) => [t, 0])) as Record<ScapLayerType, number>;
  const bad = (why: string): never => {
    throw new HubmoeError('BAD_ARGUMENT', `--sparsity ${JSON.stringify(specText)}: ${why} (examples: "0.4", "all=0.4,mamba_out=0.55"; types: ${SCAP_LAYER_TYPES.join(', ')})`);
  };
  const value = (v: string): number => {
    const x = Number(v);
    if (!(x >= 0 && x < 1)) bad(`${JSON.stringify(v)} is not a sparsity in [0, 1)`);
    return x;
  };
  const parts = specText.split(',').map((p) => p.trim()).filter(Boolean);
  if (parts.length === 0) bad('empty');
  for (const part of parts) {
    if (!part.includes('=')) {
      if (parts.length !== 1) bad('a bare number must stand alone');
      for (const t of SCAP_LAYER_TYPES) out[t] = value(part);
      continue;
    }
    const [key, v] = part.split('=') as [string, string];
    if (key === 'all') for (const t of SCAP_LAYER_TYPES) out[t] = value(v);
    else if ((SCAP_LAYER_TYPES as readonly string[]).includes(key)) out[key as ScapLayerType] = value(v);
    else bad(`unknown layer type ${JSON.stringify(key)}`);
  }
  return out;
}

/** Replaces a JSON file of the written model dir in one rename, so it is never half-written. */
async function writeJsonAtomic(path: string, value: unknown): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}`;
  await writeFile(tmp, JSON.stringify(value, null, 2) + '\n');
  await rename(tmp, path);
}

function sha256(data: string | Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

async function readText(path: string): Promise<string> {
  try {
    return await readFile(path, 'utf-8');
  } catch (err) {
    throw fileError(path, err);
  }
}

/** Rows of the weights reading a site, concatenated: [Σ out, in] (for the mode selection). */
async function siteWeights(tensors: CanonicalTensors, names: string[]): Promise<Float32Array> {
  const blocks: Float32Array[] = [];
  for (const name of names) {
    const [base, expert] = name.split('#') as [string, string | undefined];
    const t = tensors.get(base);
    if (!t) throw new HubmoeError('MISSING_TENSOR', `canonical tensor ${base} is missing`);
    blocks.push(expert === undefined ? await readWhole(t) : await readExpert(t, Number(expert)));
  }
  return concat(blocks);
}

/** Every site of the model's graph, in graph order (building the calibration graph without writing it). */
function sitesOfModel(spec: ModelSpec, tensors: CanonicalTensors): ScapLowering['registered'] {
  const lowering: ScapLowering = { kind: 'calibrate', sites: {}, registered: [] };
  buildGraph(spec, tensors, { dtype: 'fp32', target: 'portable', options: spec.export?.options, scap: lowering });
  return lowering.registered;
}

function concat(parts: Float32Array[]): Float32Array {
  const data = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
  let off = 0;
  for (const p of parts) {
    data.set(p, off);
    off += p.length;
  }
  return data;
}

interface Calibrated {
  mode: number;
  threshold: number;
  calibration: number;
  values: number;
}

/** Chooses m and t for one site from its calibration inputs X ([rows, in]). */
async function calibrateSite(x: Float32Array, cols: number, target: number, center: boolean, weights: () => Promise<Float32Array>): Promise<Calibrated> {
  const thresholdFor = (m: number): number => quantile(absShifted(x, m), target);
  let mode = 0;
  if (center && x.length > 0) {
    const w = await weights();
    const out = w.length / cols;
    const rows = x.length / cols;
    // The output error of each candidate, on up to 256 evenly spaced calibration rows.
    const take = Math.min(rows, 256);
    const sample = new Float32Array(take * cols);
    for (let i = 0; i < take; i++) {
      const r = Math.floor((i * rows) / take);
      sample.set(x.subarray(r * cols, (r + 1) * cols), i * cols);
    }
    let best = Infinity;
    for (const m of modeCandidates(x)) {
      const err = pruningError(sample, take, w, out, m, thresholdFor(m));
      // Candidates are tried 0 first: a shift has to lower the error to be taken.
      if (err < best) {
        best = err;
        mode = m;
      }
    }
  }
  const threshold = x.length ? thresholdFor(mode) : -1;
  let zeroed = 0;
  for (let i = 0; i < x.length; i++) if (Math.abs(x[i]! - mode) <= threshold) zeroed++;
  return { mode, threshold, calibration: x.length ? zeroed / x.length : 0, values: x.length };
}

function stageOf(site: string, type: ScapLayerType): string {
  const block = /^blocks\.(\d+)\./.exec(site)![1];
  const inner = type === 'mamba_out' || type === 'attn_o' || type === 'mlp_down' || type === 'expert_down';
  return `${block}.${inner ? 1 : 0}`;
}

export async function prune(modelDir: string, opts: PruneOptions): Promise<PruneResult> {
  const log = opts.log ?? silentLogger;
  const method = opts.method ?? 'scap';
  const center = method === 'scap' && (opts.modeCentering ?? 'auto') === 'auto';
  const window = opts.window ?? 256;
  const calibTokens = opts.calibTokens ?? 16384;
  const targets = parseSparsity(opts.sparsity);
  const outDir = resolve(opts.outDir);
  if (outDir === resolve(modelDir)) throw new HubmoeError('BAD_ARGUMENT', `--out ${opts.outDir} is the dense model dir itself; prune writes a new model dir`);
  // Before the calibration work, not after it.
  await prepareOutDir(outDir, opts.overwrite ?? false);
  const dense = await loadSpec(modelDir);
  const target: ExportTarget = opts.target ?? dense.export?.target ?? 'portable';
  if (dense.scap) throw new HubmoeError('BAD_ARGUMENT', `${modelDir} is already SCAP-pruned (${dense.scap.sparsity}); prune the dense model dir it came from`);
  const tok = await loadTokenizer(modelDir);
  if (!tok) throw new HubmoeError('NOT_FOUND', `${modelDir}: the model dir has no tokenizer.json; calibration text needs one`);
  const calibText = await readText(opts.calib);
  // Read now: a missing --ppl file is reported before the calibration work.
  const evalText = opts.ppl === undefined ? undefined : await readText(opts.ppl);
  const ids = encodeCorpus(tok, calibText, undefined, calibTokens).slice(0, calibTokens);
  const windows = Math.floor(ids.length / window);
  if (windows < 1) throw new HubmoeError('BAD_ARGUMENT', `${opts.calib}: ${ids.length} tokens, fewer than one window of ${window}`);
  log.info(`calibration: ${windows * window} tokens of ${opts.calib} in ${windows} windows of ${window}`);

  const source = dense.source.repo ?? dense.source.path;
  if (!source) throw new HubmoeError('BAD_SPEC', `${modelDir}/hubmoe.json records no source checkpoint; prune re-reads the weights from it`);
  const opened = await openSource(source, {
    ...opts.hub,
    family: dense.family,
    revision: dense.source.commit,
    tokenizer: modelDir,
    expertAct: dense.export?.options?.expert_act as Activation | undefined,
    log,
  });
  const work = await mkdtemp(join(tmpdir(), 'hubmoe-scap-'));
  try {
    const { spec } = opened;
    delete spec.scap;
    spec.export = { ...dense.export, target: 'portable', dtypes: dense.export?.dtypes ?? ['fp32'], hubmoe_version: VERSION };
    // 1–2. Calibration, one block at a time: each block's graph (calibration form: every site's mode and
    // threshold are inputs, its raw input an output) runs on the residual stream that the blocks before it,
    // already pruned, produced for every calibration window. Per block: one run per stage (its input sites, then
    // its inner ones), each on inputs pruned upstream, then one run with all its thresholds for the stream the
    // next block reads — so the cost grows linearly with depth. TEAL: one run per block on the dense stream.
    const values = new Map<string, Calibrated>();
    const registered: ScapLowering['registered'] = [];
    const batches: number[][][] = [];
    for (let w0 = 0; w0 < windows; w0 += 8) {
      const rows: number[][] = [];
      for (let w = w0; w < Math.min(windows, w0 + 8); w++) rows.push(ids.slice(w * window, (w + 1) * window));
      batches.push(rows);
    }
    let stream: ort.Tensor[] | undefined; // hidden_in per batch; undefined before block 0 (input_ids)
    const countSites = sitesOfModel(spec, opened.tensors).filter((r) => targets[r.type] > 0).length;
    let done = 0;
    for (let j = 0; j < spec.blocks.length; j++) {
      const lowering: ScapLowering = { kind: 'calibrate', sites: {}, registered: [] };
      const g = buildGraph(spec, opened.tensors, { dtype: 'fp32', target: 'portable', options: spec.export.options, scap: lowering, range: { from: j, to: j + 1 } });
      registered.push(...lowering.registered);
      const name = `block${j}`;
      await writeOnnx(g, work, name, { fileOrder: opened.checkpoint.files, prepare: (f) => opened.checkpoint.prepare(f), producerVersion: VERSION });
      const session = await ort.InferenceSession.create(join(work, `${name}.onnx`), opts.threads ? { intraOpNumThreads: opts.threads } : {});
      try {
        const feedsFor = (b: number): Record<string, ort.Tensor> => {
          const rows = batches[b]!;
          const B = rows.length;
          const feeds: Record<string, ort.Tensor> = {
            attention_mask: new ort.Tensor('int64', new BigInt64Array(B * window).fill(1n), [B, window]),
          };
          if (stream) feeds.hidden_in = stream[b]!;
          else feeds.input_ids = new ort.Tensor('int64', BigInt64Array.from(rows.flat(), (v) => BigInt(v)), [B, window]);
          for (const c of cacheSpecs(spec).filter((c) => c.block === j)) {
            const shape = c.shape.map((d) => (typeof d === 'number' ? d : d === 'batch_size' ? B : 0));
            feeds[c.input] = new ort.Tensor('float32', new Float32Array(shape.reduce((x, y) => x * y, 1)), shape);
          }
          for (const r of lowering.registered) {
            const v = method === 'teal' ? undefined : values.get(r.site);
            feeds[scapModeInput(r.site)] = new ort.Tensor('float32', Float32Array.of(v?.mode ?? 0), []);
            feeds[scapThresholdInput(r.site)] = new ort.Tensor('float32', Float32Array.of(v?.threshold ?? -1), []);
          }
          return feeds;
        };
        /** Runs every batch; returns the inputs of `stage` sites, and the block's output when `next`. */
        const run = async (stage: ScapLowering['registered'], next: boolean): Promise<{ inputs: Map<string, { data: Float32Array; cols: number }>; out: ort.Tensor[] }> => {
          const chunks = new Map<string, Float32Array[]>(stage.map((s) => [s.site, []]));
          const cols = new Map<string, number>();
          const out: ort.Tensor[] = [];
          for (let b = 0; b < batches.length; b++) {
            const res = await session.run(feedsFor(b), [...stage.map((s) => scapInput(s.site)), ...(next ? ['hidden_out'] : [])]);
            for (const s of stage) {
              const t = res[scapInput(s.site)]!;
              chunks.get(s.site)!.push(t.data as Float32Array);
              cols.set(s.site, t.dims[t.dims.length - 1] ?? 0);
            }
            if (next) out.push(res.hidden_out!);
          }
          return { inputs: new Map([...chunks].map(([site, parts]) => [site, { data: concat(parts), cols: cols.get(site) ?? 0 }])), out };
        };
        const calibrate = async (stage: ScapLowering['registered'], inputs: Map<string, { data: Float32Array; cols: number }>): Promise<void> => {
          for (const s of stage) {
            const x = inputs.get(s.site)!;
            const weights = async (): Promise<Float32Array> => siteWeights(opened.tensors, s.weights);
            values.set(s.site, await calibrateSite(x.data, x.cols, targets[s.type], center, weights));
          }
          done += stage.length;
          if (stage.length) log.progress?.('calibrating sites', done, countSites);
        };
        const own = lowering.registered.filter((r) => targets[r.type] > 0);
        if (method === 'teal') {
          const r = await run(own, true);
          await calibrate(own, r.inputs);
          stream = r.out;
        } else {
          for (const inner of [false, true]) {
            const stage = own.filter((s) => stageOf(s.site, s.type).endsWith(inner ? '.1' : '.0'));
            if (stage.length) await calibrate(stage, (await run(stage, false)).inputs);
          }
          stream = (await run([], true)).out;
        }
      } finally {
        await session.release();
        await rm(join(work, `${name}.onnx`), { force: true });
        await rm(join(work, `${name}.onnx_data`), { force: true });
      }
    }
    const sites = registered.filter((r) => targets[r.type] > 0);
    // 3. The pruned model dir.
    const siteSpecs: Record<string, ScapSiteSpec> = {};
    for (const s of sites) {
      const v = values.get(s.site)!;
      if (v.values === 0) {
        log.warn(`${s.site}: no calibration tokens reached it (an expert no token was routed to); it stays dense`);
        continue;
      }
      const bias = v.mode === 0 ? [] : s.weights.map((w) => {
        const [name, expert] = w.split('#') as [string, string | undefined];
        return scapBiasName(name, expert === undefined ? undefined : Number(expert));
      });
      siteSpecs[s.site] = { type: s.type, target: targets[s.type], mode: v.mode, threshold: v.threshold, bias, calibration_sparsity: v.calibration, calibration_values: v.values };
    }
    spec.scap = {
      method,
      mode_centering: center ? 'auto' : 'off',
      sparsity: opts.sparsity,
      calibration: { file: opts.calib, sha256: sha256(calibText), tokens: windows * window, window },
      sites: siteSpecs,
    };
    const dtype = opts.dtype ?? (spec.export.dtypes.length > 1 ? 'both' : spec.export.dtypes[0]!);
    await writeModelDir(opened, outDir, { dtype, target, overwrite: opts.overwrite, log, extraFiles: { 'scap_config.json': spec.scap } });
    const written = { ...spec.export };
    // 4. Dense vs pruned perplexity.
    if (opts.ppl !== undefined && evalText !== undefined) {
      const evalIds = encodeCorpus(tok, evalText);
      const measure = async (dir: string, what: string): Promise<{ perplexity: number; tokens: number; stats: Map<string, { kept: number; total: number }> }> => {
        const m = await loadModel(dir, { threads: opts.threads });
        try {
          const r = await m.perplexity(evalIds, { window, onProgress: (done, total) => log.progress?.(`${what} perplexity`, done, total) });
          return { perplexity: r.perplexity, tokens: r.tokens, stats: m.scapStats() };
        } finally {
          await m.dispose();
        }
      };
      const denseP = await measure(modelDir, 'dense');
      // The fused target's operators prune without counting: the evaluation runs the portable form of the
      // same pruned model (equal to the fused one to rounding; test/scap/prune.test.ts), which counts.
      let evalDir = outDir;
      if (target === 'fused') {
        evalDir = join(work, 'portable');
        await writeModelDir(opened, evalDir, { dtype: 'fp32', target: 'portable', log: silentLogger });
        spec.export = written;
      }
      const prunedP = await measure(evalDir, 'pruned');
      const achieved = Object.fromEntries(sparsityByType(spec.scap, prunedP.stats).map((r) => [r.type, r.achieved]));
      spec.scap.evaluation = { file: opts.ppl, sha256: sha256(evalText), tokens: prunedP.tokens, dense: denseP.perplexity, pruned: prunedP.perplexity, achieved };
      await writeJsonAtomic(join(outDir, 'hubmoe.json'), spec);
      await writeJsonAtomic(join(outDir, 'scap_config.json'), spec.scap);
    }
    const reports: PruneSiteReport[] = Object.entries(siteSpecs).map(([site, v]) => ({ site, type: v.type, target: v.target, calibration: v.calibration_sparsity, mode: v.mode, threshold: v.threshold }));
    return { outDir, spec, sites: reports, evaluation: spec.scap.evaluation };
  } finally {
    await opened.close();
    await rm(work, { recursive: true, force: true });
  }
}
