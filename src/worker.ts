import { ConfigError, loadConfig, type Config } from './config.js';
import { systemClock } from './infra/clock.js';
import { createLogger } from './infra/logger.js';
import { wireServices } from './services.js';

/**
 * `npm run worker`: push deliveries without the API (no HTTP, no presence of its own). Run it
 * beside instances started with PUSH_CONCURRENCY=0, or as extra capacity beside ordinary ones; it
 * needs the instances' REDIS_URL, REDIS_KEY_PREFIX and PUSH_* settings. SIGTERM/SIGINT let the
 * deliveries in flight finish (a few seconds at most, then they are retried elsewhere) and exit 0.
 */
async function main() {
  let config: Config;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      for (const problem of err.problems) console.error(`switchboard-worker: ${problem}`);
      process.exit(1);
    }
    throw err;
  }
  const problems = [
    ...(config.push ? [] : ['PUSH_WEBHOOK_URL: not set, so there is nothing to deliver']),
    ...(config.redisUrl ? [] : ['REDIS_URL: required (the worker serves the instances\' Redis; it starts none)']),
    ...(config.push?.concurrency === 0 ? ['PUSH_CONCURRENCY: 0 leaves this worker nothing to do'] : []),
  ];
  if (problems.length > 0 || !config.redisUrl) {
    for (const problem of problems) console.error(`switchboard-worker: ${problem}`);
    process.exit(1);
  }
  const logger = createLogger(config.logLevel, config.instanceId);
  const { redis, services } = wireServices(config, { redisUrl: config.redisUrl, logger, clock: systemClock });
  let stopping = false;
  const shutdown = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'signal received');
    const force = setTimeout(() => process.exit(1), 9_500);
    force.unref();
    services.push
      .stop()
      .then(() => redis.close())
      .then(
        () => {
          logger.info('stopped');
          process.exit(0);
        },
        (err: unknown) => {
          logger.error({ err }, 'shutdown failed');
          process.exit(1);
        },
      );
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
  process.on('unhandledRejection', (err) => logger.error({ err }, 'unhandled rejection'));
  await services.push.start();
  logger.info({ concurrency: config.push?.concurrency }, 'push worker started');
}

main().catch((err: unknown) => {
  console.error('switchboard-worker: failed to start:', err instanceof Error ? err.message : err);
  process.exit(1);
});
