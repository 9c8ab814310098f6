import { pino, type Logger } from 'pino';

/** Structured JSON logs (pino); quiet under tests unless LOG_LEVEL says otherwise. */
export function createLogger(level: string, instanceId: string): Logger {
  return pino({ level, base: { instance: instanceId }, timestamp: pino.stdTimeFunctions.isoTime });
}

export type { Logger };
