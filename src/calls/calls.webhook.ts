import { createHash } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { isRedisUnavailableError } from '../errors.js';
import type { Logger } from '../infra/logger.js';
import type { CallsService } from './calls.service.js';

/** Where LiveKit posts its webhooks (set it as the webhook URL in LiveKit's configuration). */
export const LIVEKIT_WEBHOOK_PATH = '/webhooks/livekit';

/** Dependencies of {@link createLiveKitWebhookHandler}. */
export interface WebhookHandlerDeps {
  calls: CallsService;
  logger: Logger;
  /** Largest body read (the rest of the server's cap). */
  maxBodyBytes: number;
}

/** Reads a request body as text, up to `max` bytes (null above it). */
function readBody(req: IncomingMessage, max: number): Promise<string | null> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > max) {
        resolve(null);
        req.resume();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

/**
 * `POST /webhooks/livekit`: verifies the event with the SDK's WebhookReceiver against the raw body
 * (the JWT in `Authorization` carries the body's SHA-256), then applies it. 401 when it does not
 * verify (nothing changes), 200 once applied or known (a duplicate), 503 when Redis is away so
 * LiveKit delivers it again.
 */
export function createLiveKitWebhookHandler({ calls, logger, maxBodyBytes }: WebhookHandlerDeps) {
  const answer = (res: ServerResponse, status: number, body: Record<string, unknown>) => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  };
  return async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    if (req.method !== 'POST') {
      res.setHeader('allow', 'POST');
      req.resume();
      return answer(res, 405, { error: 'POST only' });
    }
    if (!calls.configured) {
      req.resume();
      return answer(res, 503, { error: 'NOT_CONFIGURED', message: 'LiveKit is not configured on this server' });
    }
    const body = await readBody(req, maxBodyBytes).catch(() => null);
    if (body === null) return answer(res, 413, { error: 'body too large or unreadable' });
    let event;
    try {
      event = await calls.verifyWebhook(body, req.headers.authorization);
    } catch (err) {
      // Signed but not JSON: LiveKit's, so a bug somewhere; anything else failed verification.
      if (err instanceof SyntaxError) return answer(res, 400, { error: 'not JSON' });
      logger.warn({ err: (err as Error).message }, 'LiveKit webhook refused: bad or missing signature');
      return answer(res, 401, { error: 'invalid signature' });
    }
    // LiveKit always sends an id; without one, the body itself identifies the event.
    const eventId = event.id || createHash('sha256').update(body).digest('base64url');
    try {
      const outcome = await calls.applyWebhook(event, eventId);
      logger.debug({ event: event.event, id: eventId, room: event.room?.name, outcome }, 'LiveKit webhook');
      return answer(res, 200, { ok: true, outcome });
    } catch (err) {
      logger.warn({ err: (err as Error).message, event: event.event }, 'LiveKit webhook not applied');
      return answer(res, isRedisUnavailableError(err) ? 503 : 500, { error: 'not applied' });
    }
  };
}
