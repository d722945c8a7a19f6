/**
 * One forwarded event, delivered with Braze's webhook rules: a request slot is held only while
 * a request is in flight (a user waiting for a retry leaves its slot to others), each answer
 * is recorded inside its slot, and every wait ends at once on SIGTERM/SIGINT.
 */
import { setTimeout as delay } from 'node:timers/promises';
import type { LimitFunction } from 'p-limit';
import type { Sleep } from '../http/clock.js';
import type { Logger } from '../log.js';
import type { Delivery, MovableInkClient } from './movable-ink-client.js';

/**
 * Send one event with Braze's webhook rule (up to 5 attempts, exponential backoff with jitter,
 * a server-given wait honoured exactly). A slot is held only while a request is in flight, and
 * every wait ends at once on SIGTERM/SIGINT.
 */
export async function deliverEvent(
  client: MovableInkClient,
  payload: object,
  slots: LimitFunction,
  log: Logger,
  record: (delivery: Delivery) => Promise<void>,
  stop?: AbortSignal,
): Promise<'done' | 'gave-up' | 'stopped'> {
  const policy = client.policy;
  for (let n = 1; ; n++) {
    const outcome = await slots(async () => {
      const attempt = await client.attemptOnce(payload);
      if (attempt.kind === 'done') await record(attempt.result);
      return attempt;
    });
    if (outcome.kind === 'done') return 'done';
    if (outcome.rateLimited) client.stats.rateLimited++;
    if (n >= policy.maxAttempts) return 'gave-up';
    const wait = outcome.waitMs ?? Math.min(policy.maxBackoffMs, policy.backoffMs * 2 ** (n - 1)) * policy.random();
    client.stats.retries++;
    log.debug('retrying event', { attempt: n, reason: outcome.reason, waitMs: Math.round(wait) });
    if (!(await sleepUnlessStopped(policy.sleep, wait, stop))) return 'stopped';
  }
}

/**
 * Sleep, or end early when `stop` fires; true when the full time passed. Without an injected
 * sleep, the timer itself is cancelled, or a pending 30 s timer would keep the process alive
 * after SIGTERM.
 */
async function sleepUnlessStopped(sleep: Sleep | undefined, ms: number, stop?: AbortSignal): Promise<boolean> {
  if (stop?.aborted) return false;
  if (!sleep) {
    try {
      await delay(Math.max(0, ms), undefined, { signal: stop });
      return true;
    } catch {
      return false;
    }
  }
  if (!stop) {
    await sleep(ms);
    return true;
  }
  let onAbort: () => void = () => {};
  const stopped = new Promise<false>((resolve) => {
    onAbort = () => resolve(false);
    stop.addEventListener('abort', onAbort, { once: true });
  });
  try {
    return await Promise.race([sleep(ms).then(() => true as const), stopped]);
  } finally {
    stop.removeEventListener('abort', onAbort);
  }
}
