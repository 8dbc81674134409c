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

export interface TypeSummary {
  type: ScapLayerType;
  sites: number;
  /** Mean target of the type's sites. */
  target: number;
  /** Mean sparsity the sites reached on the calibration tokens. */
  calibration: number;
  /** Sites with a non-zero mode. */
  centered: number;
}

/** The calibrated sites of a pruned model, grouped by layer type (in the order types first appear). */
export function typeSummary(scap: ScapSpec): TypeSummary[] {
  const by = new Map<ScapLayerType, TypeSummary>();
  for (const v of Object.values(scap.sites)) {
    const e = by.get(v.type) ?? { type: v.type, sites: 0, target: 0, calibration: 0, centered: 0 };
    e.sites++;
    e.target += v.target;
    e.calibration += v.calibration_sparsity;
    if (v.mode !== 0) e.centered++;
    by.set(v.type, e);
  }
  return [...by.values()].map((e) => ({ ...e, target: e.target / e.sites, calibration: e.calibration / e.sites }));
}

/** Groups per-site counts by layer type; types with no input seen are left out. */
export function sparsityByType(scap: ScapSpec, stats: Map<string, { kept: number; total: number }>): TypeSparsity[] {
  const counts = new Map<ScapLayerType, { kept: number; total: number }>();
  for (const [site, v] of Object.entries(scap.sites)) {
    const s = stats.get(site);
    const e = counts.get(v.type) ?? { kept: 0, total: 0 };
    e.kept += s?.kept ?? 0;
    e.total += s?.total ?? 0;
    counts.set(v.type, e);
  }
  return typeSummary(scap)
    .map((t) => ({ t, c: counts.get(t.type)! }))
    .filter(({ c }) => c.total > 0)
    .map(({ t, c }) => ({ type: t.type, sites: t.sites, target: t.target, achieved: 1 - c.kept / c.total, values: c.total }));
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
