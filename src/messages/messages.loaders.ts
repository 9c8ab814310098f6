import DataLoader from 'dataloader';
import type { MessageModel } from './messages.models.js';
import type { MessagesService } from './messages.service.js';

/** Messages by (room, seq), one pipeline per tick. */
export const createMessageLoader = (messages: MessagesService) =>
  new DataLoader<{ roomId: string; seq: number }, MessageModel | null, string>((keys) => messages.getMany(keys), {
    cacheKeyFn: (k) => `${k.roomId}\n${k.seq}`,
  });
