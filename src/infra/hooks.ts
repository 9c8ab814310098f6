import type { ChainableCommander } from 'ioredis';

/**
 * A hook that adds Redis commands to a pipeline the core is about to run. It may return a function
 * that receives the replies of its own commands once the pipeline ran (to publish what changed).
 */
export type PipelineHook<T, P = ChainableCommander> = (pipeline: P, payload: T) => void | ((replies: unknown[]) => void);

/** Hands each hook the replies of its commands. */
export type Settle = (replies: unknown[]) => void;

/**
 * Extension points the core offers features (typing, receipts, search, push…): each registered
 * hook adds its commands to one pipeline, so a feature adds no round trip to the core's path.
 */
export interface HookList<T, P extends { readonly length: number } = ChainableCommander> {
  add(hook: PipelineHook<T, P>): void;
  /** Lets every hook add its commands to `pipeline`; call the result with the pipeline's replies. */
  apply(pipeline: P, payload: T): Settle;
}

/** Runs several settle functions over one pipeline's replies. */
export const settleAll =
  (settles: Settle[]): Settle =>
  (replies) => {
    for (const settle of settles) settle(replies);
  };

/** Creates an empty hook list. */
export function createHooks<T, P extends { readonly length: number } = ChainableCommander>(): HookList<T, P> {
  const hooks: PipelineHook<T, P>[] = [];
  return {
    add: (hook) => void hooks.push(hook),
    apply(pipeline, payload) {
      const after: { from: number; to: number; fn: (replies: unknown[]) => void }[] = [];
      for (const hook of hooks) {
        const from = pipeline.length;
        const fn = hook(pipeline, payload);
        if (fn) after.push({ from, to: pipeline.length, fn });
      }
      return (replies) => {
        for (const { from, to, fn } of after) fn(replies.slice(from, to));
      };
    },
  };
}
