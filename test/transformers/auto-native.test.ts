/**
 * Importing hubmoe/transformers registers hubmoe's native backend when it is built, so that
 * `device: 'cuda'` and `executionProviders: ['hubmoe']` reach it without any call. Checked in a child
 * process on the compiled package (the other tests set HUBMOE_NATIVE=0 and register it themselves).
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadNative } from '../../runtime/native/index.js';
import { ROOT } from '../helpers.js';

function importPlugin(env: Record<string, string | undefined>): string {
  const script = `const m = await import(${JSON.stringify(join(ROOT, 'dist', 'src', 'transformers', 'index.js'))}); console.log(JSON.stringify(m.nativeBackend ?? null));`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf-8', env: { ...process.env, ...env } });
  expect(r.status, r.stderr).toBe(0);
  return r.stdout.trim();
}

describe('hubmoe/transformers and the native backend', () => {
  it('registers the built native backend on import', () => {
    // CI builds the addon (npm run build:native) before the tests.
    expect(loadNative(), 'the native addon must be built for this test (npm run build:native)').toBeDefined();
    const info = JSON.parse(importPlugin({ HUBMOE_NATIVE: undefined }));
    expect(info).toMatchObject({ name: 'hubmoe', deviceCaches: true });
  });

  it('HUBMOE_NATIVE=0 leaves it unregistered', () => {
    expect(importPlugin({ HUBMOE_NATIVE: '0' })).toBe('null');
  });
});
