import DataLoader from 'dataloader';
import type { PipelineBatch } from '../infra/pipeline-batch.js';
import type { UserModel } from './users.models.js';
import type { UsersService } from './users.service.js';

/** Users by id, in the operation's pipeline of the tick; a user never seen reads as a placeholder named by id. */
export const createUserLoader = (users: UsersService, batch: PipelineBatch) =>
  new DataLoader<string, UserModel>(async (ids) =>
    (await batch.run(users.readMany(ids))).map((u, i) => u ?? { id: ids[i] as string, name: ids[i] as string, createdAt: 0 }),
  );
