/**
 * inspect(): what a checkpoint or a hubmoe model dir holds — family, parameter counts, the block
 * table — read from headers only (no weights are loaded).
 */
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { describeBlock, openSource, planFor } from './convert.js';
import type { ConvertPlan, SourceOptions } from './convert.js';
import type { ModelSpec } from './schema/spec.js';
import { activeParameterCount, parameterCount } from './schema/tensors.js';
import { loadSpec } from './schema/load.js';

export interface InspectResult {
  /** 'checkpoint' for a source checkpoint, 'model' for a converted hubmoe model dir. */
  kind: 'checkpoint' | 'model';
  spec: ModelSpec;
  plan: Omit<ConvertPlan, 'outputs'>;
}

async function isModelDir(source: string): Promise<boolean> {
  try {
    return (await stat(join(source, 'hubmoe.json'))).isFile();
  } catch {
    return false;
  }
}

export async function inspect(source: string, options: SourceOptions = {}): Promise<InspectResult> {
  if (await isModelDir(source)) {
    const spec = await loadSpec(source);
    const plan: Omit<ConvertPlan, 'outputs'> = {
      source,
      family: spec.family,
      format: 'onnx',
      files: (spec.export?.dtypes ?? []).map((d) => ({ path: d === 'fp16' ? 'onnx/model_fp16.onnx' : 'onnx/model.onnx' })),
      parameters: parameterCount(spec),
      activeParameters: activeParameterCount(spec),
      blocks: [],
    };
    return { kind: 'model', spec, plan: { ...plan, blocks: blocksOf(spec) } };
  }
  const opened = await openSource(source, options);
  try {
    const sizes = new Map<string, number>();
    for (const f of opened.checkpoint.files) {
      const s = await opened.store.open(f);
      sizes.set(f, await s.size());
      await s.close();
    }
    const { outputs: _outputs, ...plan } = planFor(opened, source, 'fp32', sizes);
    return { kind: 'checkpoint', spec: opened.spec, plan };
  } finally {
    await opened.close();
  }
}

function blocksOf(spec: ModelSpec): ConvertPlan['blocks'] {
  return spec.blocks.map((_, j) => describeBlock(spec, j));
}

export function formatCount(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)}B`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}K`;
  return String(n);
}

/** A plain-text report: header lines and the block table. */
export function formatInspect(r: InspectResult): string {
  const p = r.plan;
  const lines = [
    `source      ${p.source}`,
    `family      ${p.family}`,
    `format      ${p.format}`,
    `parameters  ${formatCount(p.parameters)} (${formatCount(p.activeParameters)} active per token)`,
    `hidden      ${r.spec.hidden}`,
    `vocab       ${r.spec.vocab.size}${r.spec.vocab.padded_size !== r.spec.vocab.size ? ` (${r.spec.vocab.padded_size} rows)` : ''}`,
    `blocks      ${p.blocks.length}`,
  ];
  if (p.files.length) {
    const total = p.files.reduce((a, f) => a + (f.bytes ?? 0), 0);
    lines.push(`files       ${p.files.length}${total ? ` (${(total / 2 ** 20).toFixed(1)} MiB)` : ''}`);
  }
  lines.push('', 'block  layer  kind       detail');
  for (const b of p.blocks) {
    const layer = r.spec.blocks[b.index]?.source_layer;
    lines.push(`${String(b.index).padStart(5)}  ${String(layer ?? '').padStart(5)}  ${b.kind.padEnd(9)}  ${b.detail}`);
  }
  return lines.join('\n');
}
