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

export interface SiteSparsity {
  site: string;
  type: ScapLayerType;
  target: number;
  /** Zeroed / seen inputs at the site (null when no input reached it, e.g. an expert nothing was routed to). */
  achieved: number | null;
  values: number;
}

/** Per-site sparsity, in the spec's site order. */
export function sparsityBySite(scap: ScapSpec, stats: Map<string, { kept: number; total: number }>): SiteSparsity[] {
  return Object.entries(scap.sites).map(([site, v]) => {
    const s = stats.get(site);
    return { site, type: v.type, target: v.target, achieved: s && s.total > 0 ? 1 - s.kept / s.total : null, values: s?.total ?? 0 };
  });
}

/** "site  target  achieved" lines for the terminal. */
export function formatSites(rows: SiteSparsity[]): string {
  const width = Math.max(4, ...rows.map((r) => r.site.length));
  const lines = [`${'site'.padEnd(width)}  target  achieved`];
  for (const r of rows) lines.push(`${r.site.padEnd(width)}  ${(100 * r.target).toFixed(1).padStart(4)} %  ${r.achieved === null ? '     –' : `${(100 * r.achieved).toFixed(1).padStart(6)} %`}`);
  return lines.join('\n');
}
