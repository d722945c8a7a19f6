/**
 * Time, injected: clients and limiters take a clock and a sleep so tests can replace both.
 * The real sleep ends early when the process is asked to stop (SIGTERM/SIGINT), so no retry
 * wait, rate-limit pause or backoff outlives a shutdown; callers then see `stopped()`.
 */
import { InterruptedError } from '../errors.js';
import { processStop } from '../run/shutdown.js';

export type Clock = () => number;
export type Sleep = (ms: number) => Promise<void>;

export const realClock: Clock = () => Date.now();

/** Sleep `ms`, or less if the process is asked to stop (the caller checks with `throwIfStopped`). */
export const realSleep: Sleep = (ms) => sleepUnless(ms, processStop());

/** Sleep `ms`, waking at once when `signal` aborts. Never rejects. */
export function sleepUnless(ms: number, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, Math.max(0, ms));
    signal.addEventListener('abort', done, { once: true });
  });
}

/** After a wait: a stop requested meanwhile ends the work that waited, at once. */
export function throwIfStopped(what: string, signal: AbortSignal = processStop()): void {
  if (signal.aborted) throw new InterruptedError(`stopped by ${String(signal.reason ?? 'a signal')} while ${what}; what was not confirmed is sent next run`);
}
