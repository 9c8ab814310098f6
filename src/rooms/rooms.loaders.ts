import DataLoader from 'dataloader';
import type { PipelineBatch } from '../infra/pipeline-batch.js';
import type { RoomModel } from './rooms.models.js';
import type { RoomsService } from './rooms.service.js';

const pairKey = (p: { roomId: string; userId: string }) => `${p.roomId}\n${p.userId}`;

/** Rooms by id, in the operation's pipeline of the tick. */
export const createRoomLoader = (rooms: RoomsService, batch: PipelineBatch) =>
  new DataLoader<string, RoomModel | null>((ids) => batch.run(rooms.readRooms(ids)));

/** Member counts by room id, in the operation's pipeline of the tick. */
export const createMemberCountLoader = (rooms: RoomsService, batch: PipelineBatch) =>
  new DataLoader<string, number>((ids) => batch.run(rooms.readMemberCounts(ids)));

/** Membership of (room, user) pairs, in the operation's pipeline of the tick. */
export const createIsMemberLoader = (rooms: RoomsService, batch: PipelineBatch) =>
  new DataLoader<{ roomId: string; userId: string }, boolean, string>((pairs) => batch.run(rooms.readAreMembers(pairs)), {
    cacheKeyFn: pairKey,
  });
