import './infra/v8-flags.js';
import { buildApp } from './app.js';
import { ConfigError, loadConfig } from './config.js';

/** Entry point: load config, start, stop on SIGTERM/SIGINT. */
async function main() {
  let config;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      // One line per bad variable, each naming it.
      for (const problem of err.problems) console.error(`switchboard: ${problem}`);
      process.exit(1);
    }
    throw err;
  }
  const app = await buildApp(config);
  let stopping = false;
  const shutdown = (signal: string) => {
    if (stopping) return;
    stopping = true;
    app.logger.info({ signal }, 'signal received');
    // The contract gives 10 s; leave margin for the process to exit.
    const force = setTimeout(() => process.exit(1), 9_500);
    force.unref();
    app.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        app.logger.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
  process.on('unhandledRejection', (err) => app.logger.error({ err }, 'unhandled rejection'));
  await app.start();
}

main().catch((err: unknown) => {
  console.error('switchboard: failed to start:', err instanceof Error ? err.message : err);
  process.exit(1);
});
