/** Reading a model dir's hubmoe.json, validated. */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { HubmoeError } from '../errors.js';
import type { ModelSpec } from './spec.js';
import { validateSpec } from './validate.js';

export async function loadSpec(dir: string): Promise<ModelSpec> {
  const path = join(dir, 'hubmoe.json');
  let text: string;
  try {
    text = await readFile(path, 'utf-8');
  } catch {
    throw new HubmoeError('NOT_FOUND', `${dir}: not a hubmoe model dir (no hubmoe.json); convert a checkpoint first with \`hubmoe convert\``);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new HubmoeError('CORRUPT_FILE', `${path}: not valid JSON (${(err as Error).message})`);
  }
  return validateSpec(json, path);
}
