/**
 * Bounded fan-out for a producer that reads work from a cursor: at most `concurrency` tasks
 * run at once (p-limit) and `submit` waits once `maxPending` are in flight, so the producer
 * never reads far ahead and memory stays bounded. The first task error is kept; callers stop
 * submitting when they see it, and `drain` waits for what is still running.
 */
import pLimit from 'p-limit';

export interface Dispatcher {
  /** The first error a task threw, if any. */
  readonly error: unknown;
  submit(task: () => Promise<void>): Promise<void>;
  drain(): Promise<void>;
}

export function createDispatcher(concurrency: number, maxPending = concurrency): Dispatcher {
  const limit = pLimit(concurrency);
  const inFlight = new Set<Promise<void>>();
  let error: unknown;
  return {
    get error() {
      return error;
    },
    async submit(task) {
      const p = limit(task).catch((e: unknown) => {
        error ??= e;
      });
      inFlight.add(p);
      void p.finally(() => inFlight.delete(p));
      if (inFlight.size >= maxPending) await Promise.race(inFlight);
    },
    async drain() {
      await Promise.all(inFlight);
    },
  };
}
