import DataLoader from 'dataloader';
import type { RoomModel } from './rooms.models.js';
import type { RoomsService } from './rooms.service.js';

const pairKey = (p: { roomId: string; userId: string }) => `${p.roomId}\n${p.userId}`;

/** Per-request loaders of the rooms domain: one pipeline per tick, never a call per item. */
export function createRoomLoaders(rooms: RoomsService) {
  return {
    room: new DataLoader<string, RoomModel | null>((ids) => rooms.getMany(ids)),
    memberCount: new DataLoader<string, number>((ids) => rooms.memberCounts(ids)),
    isMember: new DataLoader<{ roomId: string; userId: string }, boolean, string>(
      (pairs) => rooms.areMembers(pairs),
      { cacheKeyFn: pairKey },
    ),
  };
}
