/**
 * Achieved sparsity of a pruned model, by layer type, from the kept/total counts its graph outputs
 * (runtime: HubmoeModel.scapStats()).
 */
import type { ScapLayerType, ScapSpec } from '../schema/spec.js';

export interface TypeSparsity {
  type: ScapLayerType;
  sites: number;
  /** Mean target of the type's sites. */
  target: number;
  /** Zeroed / seen inputs over every site of the type. */
  achieved: number;
  /** Inputs seen (tokens × channels). */
  values: number;
}

/** Groups per-site counts by layer type; types with no input seen are left out. */
export function sparsityByType(scap: ScapSpec, stats: Map<string, { kept: number; total: number }>): TypeSparsity[] {
  const by = new Map<ScapLayerType, { sites: number; target: number; kept: number; total: number }>();
  for (const [site, v] of Object.entries(scap.sites)) {
    const s = stats.get(site);
    const e = by.get(v.type) ?? { sites: 0, target: 0, kept: 0, total: 0 };
    e.sites++;
    e.target += v.target;
    e.kept += s?.kept ?? 0;
    e.total += s?.total ?? 0;
    by.set(v.type, e);
  }
  return [...by]
    .filter(([, e]) => e.total > 0)
    .map(([type, e]) => ({ type, sites: e.sites, target: e.target / e.sites, achieved: 1 - e.kept / e.total, values: e.total }));
}

/** "type  target  achieved" lines for the terminal. */
export function formatSparsity(rows: TypeSparsity[]): string {
  const lines = ['layer type    sites  target  achieved'];
  for (const r of rows) lines.push(`${r.type.padEnd(13)} ${String(r.sites).padStart(5)}  ${(100 * r.target).toFixed(1).padStart(5)} %  ${(100 * r.achieved).toFixed(1).padStart(6)} %`);
  return lines.join('\n');
}
