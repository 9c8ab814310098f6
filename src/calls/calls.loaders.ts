import DataLoader from 'dataloader';
import type { AppContext, Loaders } from '../context.js';
import type { CallModel } from './calls.models.js';

/** The calls domain's loaders of one operation, kept beside (not inside) the core's. */
interface CallLoaders {
  call: DataLoader<string, CallModel | null>;
  identityKey: DataLoader<string, string | null>;
}

// Keyed by the operation's Loaders: they are made anew per operation (and per subscription event),
// and these go with them.
const byOperation = new WeakMap<Loaders, CallLoaders>();

/** The calls loaders of the operation `ctx` belongs to. */
export function callLoaders(ctx: AppContext): CallLoaders {
  let loaders = byOperation.get(ctx.loaders);
  if (!loaders) {
    const { calls, callKeys } = ctx.services;
    const viewer = ctx.viewer;
    loaders = {
      // Per operation, so per viewer: membership is checked for the viewer of the operation.
      call: new DataLoader<string, CallModel | null>(async (roomIds) =>
        viewer ? calls.currentMany(viewer, roomIds) : roomIds.map(() => null),
      ),
      identityKey: new DataLoader<string, string | null>((userIds) => callKeys.identityKeys(userIds)),
    };
    byOperation.set(ctx.loaders, loaders);
  }
  return loaders;
}
