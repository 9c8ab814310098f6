/**
 * Runs `work` every `ms` milliseconds, skipping a tick while its own previous run is still going
 * (each task has its own flag, so a slow sweep never delays another task's tick); a failure goes
 * to `onError`. The timer does not keep the process alive; stop it with `clearInterval`.
 */
export function repeatUnlessBusy(ms: number, work: () => Promise<unknown>, onError: (err: Error) => void): NodeJS.Timeout {
  let busy = false;
  const timer = setInterval(() => {
    if (busy) return;
    busy = true;
    work()
      .catch(onError)
      .finally(() => (busy = false));
  }, ms);
  timer.unref();
  return timer;
}
