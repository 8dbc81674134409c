/**
 * The family converters and how a source is matched to one: each converter recognises its own
 * config (model_type, architectures, or Megatron-style keys); an unknown config is an error that
 * lists what is supported.
 */
import { HubmoeError } from '../src/errors.js';
import type { Family } from '../src/schema/spec.js';
import { blackmamba, moeMamba } from './blackmamba.js';
import { jamba } from './jamba.js';
import { mamba } from './mamba.js';
import type { FamilyConverter, SourceConfig } from './types.js';

export const CONVERTERS: FamilyConverter[] = [jamba, blackmamba, moeMamba, mamba];

export function converterFor(family: Family): FamilyConverter {
  const c = CONVERTERS.find((x) => x.family === family);
  if (!c) throw new HubmoeError('UNSUPPORTED', `no converter for family ${family}`);
  return c;
}

export function supportedArchitectures(): string {
  return CONVERTERS.map((c) => `${c.family}: ${c.architectures.join(', ')}`).join('; ');
}

export function detectConverter(src: SourceConfig): FamilyConverter {
  const found = CONVERTERS.filter((c) => c.detect(src));
  if (found.length === 1) return found[0]!;
  const what =
    typeof src.config.model_type === 'string'
      ? `model_type "${src.config.model_type}"`
      : Array.isArray(src.config.architectures)
        ? `architectures ${JSON.stringify(src.config.architectures)}`
        : 'a config without model_type or architectures';
  if (found.length > 1) {
    throw new HubmoeError('BAD_CONFIG', `${src.where}: ${what} matches several families (${found.map((c) => c.family).join(', ')}); pass --family`);
  }
  throw new HubmoeError('UNSUPPORTED', `${src.where}: ${what} is not a supported architecture. Supported: ${supportedArchitectures()}`);
}
