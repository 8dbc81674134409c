/** Helpers for the transformers.js plugin tests: converted fixtures and session-run probes. */
import { join } from 'node:path';
import { convert } from '../../src/convert.js';
import { Reference, fixture } from '../helpers.js';

/** Every family fixture the plugin must run (jamba-odd-packed and blackmamba-parallel are converter cases). */
export const FAMILY_FIXTURES = [
  'jamba-demo',
  'jamba-odd',
  'jamba-dense',
  'blackmamba-glu-bias',
  'blackmamba-plain',
  'blackmamba-silu',
  'moe-mamba',
  'mamba-hf',
  'mamba-ss',
  'mamba-hf-bias',
] as const;

export async function convertFixture(name: string, root: string): Promise<string> {
  const outDir = join(root, name);
  await convert(fixture(name, 'checkpoint'), { outDir });
  return outDir;
}

export interface GreedyCase {
  prompt: number[];
  tokens: number[];
}

/** The reference's greedy prompt (one row) and the tokens its own cached decoding produced. */
export async function greedyReference(name: string): Promise<GreedyCase> {
  const ref = await Reference.open(name);
  try {
    return { prompt: (await ref.rows('greedy_prompt'))[0]!, tokens: (await ref.rows('greedy_tokens'))[0]! };
  } finally {
    await ref.close();
  }
}

/** A tensor as seen by the probe: name, type, dims, location, and whether its CPU data is all zero. */
export interface FeedInfo {
  dims: number[];
  location: string;
  allZero: boolean | undefined;
}

interface OrtTensorLike {
  dims: readonly number[];
  location?: string;
  data?: ArrayLike<number | bigint>;
}

function describeFeed(t: OrtTensorLike): FeedInfo {
  const location = t.location ?? 'cpu';
  let allZero: boolean | undefined;
  if (location === 'cpu' && t.data) {
    allZero = true;
    for (let i = 0; i < t.data.length; i++) {
      if (Number(t.data[i]) !== 0) {
        allZero = false;
        break;
      }
    }
  }
  return { dims: [...t.dims], location, allZero };
}

/** Records every run of a transformers.js model's decoder session (its feeds, described). */
export function probeSession(model: { sessions: Record<string, { run: (feeds: Record<string, OrtTensorLike>, ...rest: unknown[]) => Promise<unknown> }> }): Array<Record<string, FeedInfo>> {
  const session = model.sessions.model!;
  const runs: Array<Record<string, FeedInfo>> = [];
  const run = session.run.bind(session);
  session.run = async (feeds, ...rest) => {
    runs.push(Object.fromEntries(Object.entries(feeds).map(([k, v]) => [k, describeFeed(v)])));
    return run(feeds, ...rest);
  };
  return runs;
}
