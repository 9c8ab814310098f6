import { defineConfig } from 'vitest/config';

export default defineConfig({
  resolve: {
    // graphql 16 ships CJS (`main`) and ESM (`module`) copies. Node, and so yoga, loads the CJS one;
    // vite would hand our sources the ESM one, and two GraphQLError classes break `instanceof`.
    alias: [{ find: /^graphql$/, replacement: 'graphql/index.js' }],
  },
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
