import DataLoader from 'dataloader';
import type { AppContext } from '../context.js';
import type { CallModel } from './calls.models.js';

/** The calls domain's loaders of one operation, kept beside (not inside) the core's. */
interface CallLoaders {
  call: DataLoader<string, CallModel | null>;
  identityKey: DataLoader<string, string | null>;
}

// Carried by the operation's Loaders (a symbol property): they are made anew per operation (and
// per subscription event), and these go with them. Not a WeakMap keyed by them: short-lived
// WeakMap keys slow V8's young-generation collector.
const CALL_LOADERS = Symbol('callLoaders');
type WithCallLoaders = { [CALL_LOADERS]?: CallLoaders };

/** The calls loaders of the operation `ctx` belongs to. */
export function callLoaders(ctx: AppContext): CallLoaders {
  let loaders = (ctx.loaders as WithCallLoaders)[CALL_LOADERS];
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
    (ctx.loaders as WithCallLoaders)[CALL_LOADERS] = loaders;
  }
  return loaders;
}
