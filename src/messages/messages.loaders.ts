import DataLoader from 'dataloader';
import type { MessageModel } from './messages.models.js';
import type { MessagesService } from './messages.service.js';

/** Per-request loaders of the messages domain. */
export function createMessageLoaders(messages: MessagesService) {
  return {
    /** Messages by (room, seq), one pipeline per tick. */
    message: new DataLoader<{ roomId: string; seq: number }, MessageModel | null, string>(
      (keys) => messages.getMany(keys),
      { cacheKeyFn: (k) => `${k.roomId}\n${k.seq}` },
    ),
  };
}
