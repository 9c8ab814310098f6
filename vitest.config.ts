import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/global-setup.ts'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // Each file owns a key prefix on the shared redis-server, so files run in parallel.
    fileParallelism: true,
    pool: 'forks',
    reporters: ['default', './test/summary-reporter.ts'],
  },
});
