import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { jamba } from '../../converters/jamba.js';
import { HubmoeError } from '../../src/errors.js';
import { canonicalTensors } from '../../src/schema/tensors.js';
import { validateSpec } from '../../src/schema/validate.js';
import { fixture } from '../helpers.js';

async function demoSpec(): Promise<Record<string, unknown>> {
  const config = JSON.parse(await readFile(fixture('jamba-demo', 'checkpoint', 'config.json'), 'utf-8')) as Record<string, unknown>;
  return JSON.parse(JSON.stringify(jamba.toSpec({ config, where: 'x', files: [] }, {}))) as Record<string, unknown>;
}

function problems(spec: unknown): string {
  try {
    validateSpec(spec, 'test.json');
  } catch (e) {
    expect((e as HubmoeError).code).toBe('BAD_SPEC');
    return (e as HubmoeError).message;
  }
  throw new Error('expected the spec to be refused');
}

describe('hubmoe.json validation', () => {
  it('accepts what the Jamba converter writes', async () => {
    expect(validateSpec(await demoSpec()).blocks).toHaveLength(16);
  });

  it('reports every problem by its JSON path', async () => {
    const s = await demoSpec();
    s.schema = 'hubmoe/0';
    (s.vocab as Record<string, unknown>).padded_size = 3;
    const blocks = s.blocks as Array<{ op: Record<string, unknown>; norm: Record<string, unknown> }>;
    blocks[3]!.op.top_k = 99;
    blocks[8]!.op.kv_heads = 3;
    blocks[0]!.op.kind = 'rnn';
    blocks[2]!.norm.bias = true;
    const msg = problems(s);
    expect(msg).toMatch(/test\.json is not a valid hubmoe\/1 model spec/);
    expect(msg).toMatch(/\$\.schema must be one of "hubmoe\/1"/);
    expect(msg).toMatch(/\$\.vocab\.padded_size must be ≥ \$\.vocab\.size/);
    expect(msg).toMatch(/\$\.blocks\[3\]\.op: top_k \(99\) exceeds experts \(8\)/);
    expect(msg).toMatch(/\$\.blocks\[8\]\.op: heads \(4\) must be a multiple of kv_heads \(3\)/);
    expect(msg).toMatch(/\$\.blocks\[0\]\.op\.kind must be one of/);
    expect(msg).toMatch(/\$\.blocks\[2\]\.norm\.bias must be false for an RMS norm/);
  });

  it('refuses a non-object', () => {
    expect(problems([])).toMatch(/\$ must be an object/);
  });
});

describe('canonical tensor names', () => {
  it('lists the tensors of every block kind in order, with [out, in] shapes', async () => {
    const spec = validateSpec(await demoSpec());
    const t = canonicalTensors(spec);
    const names = t.map((x) => x.name);
    expect(names[0]).toBe('embed.weight');
    expect(names.at(-1)).toBe('lm_head.weight');
    expect(t.find((x) => x.name === 'blocks.0.mamba.x_proj.weight')!.shape).toEqual([4 + 32, 128]);
    expect(t.find((x) => x.name === 'blocks.3.moe.gate.weight')!.shape).toEqual([8, 32, 64]);
    expect(t.find((x) => x.name === 'blocks.3.moe.down.weight')!.shape).toEqual([8, 64, 32]);
    expect(t.find((x) => x.name === 'blocks.8.attn.k.weight')!.shape).toEqual([32, 64]);
    expect(names).toContain('blocks.0.mamba.dt_norm.weight');
  });
});
