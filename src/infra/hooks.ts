import type { ChainableCommander } from 'ioredis';

/** A hook that adds Redis commands to a pipeline the core is about to run. */
export type PipelineHook<T> = (pipeline: ChainableCommander, payload: T) => void;

/**
 * Extension points the core offers features (typing, receipts, search, push…): each registered
 * hook adds its commands to one pipeline, so a feature adds no round trip to the core's path.
 */
export interface HookList<T> {
  add(hook: PipelineHook<T>): void;
  /** Lets every hook add its commands to `pipeline`. */
  apply(pipeline: ChainableCommander, payload: T): void;
}

/** Creates an empty hook list. */
export function createHooks<T>(): HookList<T> {
  const hooks: PipelineHook<T>[] = [];
  return {
    add: (hook) => void hooks.push(hook),
    apply(pipeline, payload) {
      for (const hook of hooks) hook(pipeline, payload);
    },
  };
}
