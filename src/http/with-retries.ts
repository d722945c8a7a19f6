/**
 * The retry loop shared by the HTTP clients: exponential backoff with full jitter, bounded in
 * attempts and total time; a server-given wait (Retry-After, rate-limit reset) is honoured
 * exactly instead. 429s are the server pacing us, not failing, so they get a longer leash.
 */
import type { Logger } from '../log.js';
import type { Clock, Sleep } from './clock.js';

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
    const backoff = Math.min(policy.maxBackoffMs, policy.backoffMs * 2 ** (n - 1)) * policy.random();
    const wait = outcome.waitMs ?? backoff;
    stats.retries++;
    policy.log.debug('retrying request', { attempt: n, reason: outcome.reason, waitMs: Math.round(wait) });
    await policy.sleep(wait);
  }
}

/** 408, 429 and 5xx may succeed later; every other status will not. */
export function isRetryableStatus(status: number): boolean {
  return status === 408 || status === 429 || status >= 500;
}
