import DataLoader from 'dataloader';
import type { UserModel } from './users.models.js';
import type { UsersService } from './users.service.js';

/** Users by id, one pipeline per tick; a user never seen reads as a placeholder named by id. */
export const createUserLoader = (users: UsersService) =>
  new DataLoader<string, UserModel>(async (ids) =>
    (await users.getMany(ids)).map((u, i) => u ?? { id: ids[i] as string, name: ids[i] as string, createdAt: 0 }),
  );
