/**
 * The retry loop shared by the HTTP clients: exponential backoff with full jitter, bounded in
 * attempts and total time; a server-given wait (Retry-After, rate-limit reset) is honoured
 * exactly instead. 429s are the server pacing us, not failing, so they get a longer leash.
 * Every wait is bounded: a server-given wait longer than the time left for the request
 * (maxRetryTimeMs) ends its attempts at once rather than sleeping past the budget, and every
 * wait ends at once when the process is asked to stop (an InterruptedError).
 */
import type { Logger } from '../log.js';
import { throwIfStopped, type Clock, type Sleep } from './clock.js';

/** Waits at least this long are logged at info, so a quiet run is never a mystery. */
export const LOGGED_WAIT_MS = 5_000;

export interface RetryPolicy {
  maxAttempts: number;
  backoffMs: number;
  maxBackoffMs: number;
  maxRetryTimeMs: number;
  clock: Clock;
  sleep: Sleep;
  random: () => number;
  log: Logger;
}

export interface RetryStats {
  requests: number;
  retries: number;
  rateLimited: number;
}

export type Attempt<T> = { kind: 'done'; result: T } | { kind: 'retry'; reason: string; waitMs?: number; rateLimited?: boolean };

export async function withRetries<T>(
  policy: RetryPolicy,
  stats: RetryStats,
  attempt: () => Promise<Attempt<T>>,
  giveUp: (attempts: number, elapsedSeconds: number, last: string) => Error,
): Promise<T> {
  const started = policy.clock();
  for (let n = 1; ; n++) {
    const outcome = await attempt();
    if (outcome.kind === 'done') return outcome.result;
    if (outcome.rateLimited) stats.rateLimited++;
    const elapsed = policy.clock() - started;
    const limit = outcome.rateLimited ? policy.maxAttempts * 3 : policy.maxAttempts;
    if (n >= limit || elapsed >= policy.maxRetryTimeMs) throw giveUp(n, Math.round(elapsed / 1000), outcome.reason);
    const left = policy.maxRetryTimeMs - elapsed;
    if (outcome.waitMs !== undefined && outcome.waitMs > left) {
      throw giveUp(n, Math.round(elapsed / 1000),
        `${outcome.reason}; the server asked to wait ${seconds(outcome.waitMs)}, more than the ${seconds(left)} left for this request (--max-attempts and the retry time per request bound every wait)`);
    }
    const backoff = Math.min(policy.maxBackoffMs, policy.backoffMs * 2 ** (n - 1)) * policy.random();
    const wait = Math.min(outcome.waitMs ?? backoff, left);
    stats.retries++;
    if (wait >= LOGGED_WAIT_MS) policy.log.info(`waiting ${seconds(wait)} before retrying`, { attempt: n, reason: outcome.reason });
    else policy.log.debug('retrying request', { attempt: n, reason: outcome.reason, waitMs: Math.round(wait) });
    throwIfStopped('waiting to retry a request');
    await policy.sleep(wait);
    throwIfStopped(`waiting ${seconds(wait)} to retry a request`);
  }
}

/** A wait for people: 45 s, 12 min, 24 h. */
export function formatWait(ms: number): string {
  if (ms >= 2 * 3_600_000) return `${Math.round(ms / 3_600_000)} h`;
  return ms >= 90_000 ? `${Math.round(ms / 60_000)} min` : `${Math.round(ms / 1000)} s`;
}

function seconds(ms: number): string {
  return formatWait(ms);
}

/** 408, 429 and 5xx may succeed later; every other status will not. */
export function isRetryableStatus(status: number): boolean {
  return status === 408 || status === 429 || status >= 500;
}
