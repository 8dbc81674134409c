import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // Model tests start ONNX Runtime sessions; a few files at a time keeps 2-core CI machines responsive.
    maxWorkers: 2,
    reporters: ['default', ['json', { outputFile: 'test-results.json' }]],
    // The transformers.js tests register the native backend themselves; importing hubmoe/transformers
    // registers it automatically otherwise (checked in a child process by test/transformers/auto-native.test.ts).
    env: { HUBMOE_NATIVE: '0' },
  },
});
