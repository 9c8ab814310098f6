import DataLoader from 'dataloader';
import type { PipelineBatch } from '../infra/pipeline-batch.js';
import type { MessageModel } from './messages.models.js';
import type { MessagesService } from './messages.service.js';

/** Messages by (room, seq), in the operation's pipeline of the tick. */
export const createMessageLoader = (messages: MessagesService, batch: PipelineBatch) =>
  new DataLoader<{ roomId: string; seq: number }, MessageModel | null, string>((keys) => batch.run(messages.readMany(keys)), {
    cacheKeyFn: (k) => `${k.roomId}\n${k.seq}`,
  });
