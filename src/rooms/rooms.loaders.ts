import DataLoader from 'dataloader';
import type { RoomModel } from './rooms.models.js';
import type { RoomsService } from './rooms.service.js';

const pairKey = (p: { roomId: string; userId: string }) => `${p.roomId}\n${p.userId}`;

/** Rooms by id, one pipeline per tick. */
export const createRoomLoader = (rooms: RoomsService) =>
  new DataLoader<string, RoomModel | null>((ids) => rooms.getMany(ids));

/** Member counts by room id, one pipeline per tick. */
export const createMemberCountLoader = (rooms: RoomsService) =>
  new DataLoader<string, number>((ids) => rooms.memberCounts(ids));

/** Membership of (room, user) pairs, one pipeline per tick. */
export const createIsMemberLoader = (rooms: RoomsService) =>
  new DataLoader<{ roomId: string; userId: string }, boolean, string>((pairs) => rooms.areMembers(pairs), {
    cacheKeyFn: pairKey,
  });
