/**
 * What both Braze REST clients (/users/track and /users/export/ids) take, and the one place
 * their retry defaults are set: a per-request timeout, attempts, back-off, and a total time
 * per request after which its attempts end.
 */
import { silentLogger, type Logger } from '../log.js';
import { realClock, realSleep, type Clock, type Sleep } from '../http/clock.js';
import type { RateLimiter } from '../http/rate-limiter.js';
import { describeNetworkError, postJson, type PostResult } from '../http/post-json.js';
import type { RetryStats } from '../http/with-retries.js';

export interface BrazeClientOptions {
  /** e.g. https://rest.iad-01.braze.com */
  endpoint: string;
  apiKey: string;
  rateLimiter: RateLimiter;
  /** Per-request timeout. */
  timeoutMs?: number;
  /** Attempts per request, the first included. */
  maxAttempts?: number;
  /** First backoff step; doubles per attempt, capped by maxBackoffMs. */
  backoffMs?: number;
  maxBackoffMs?: number;
  /** Give up on a request once retrying it has taken this long. */
  maxRetryTimeMs?: number;
  clock?: Clock;
  sleep?: Sleep;
  random?: () => number;
  log?: Logger;
}

export type ResolvedClientOptions = Required<Omit<BrazeClientOptions, 'endpoint' | 'apiKey' | 'rateLimiter'>>;

export function resolveClientOptions(options: BrazeClientOptions): ResolvedClientOptions {
  return {
    timeoutMs: options.timeoutMs ?? 30_000,
    maxAttempts: options.maxAttempts ?? 6,
    backoffMs: options.backoffMs ?? 1_000,
    maxBackoffMs: options.maxBackoffMs ?? 30_000,
    maxRetryTimeMs: options.maxRetryTimeMs ?? 5 * 60_000,
    clock: options.clock ?? realClock,
    sleep: options.sleep ?? realSleep,
    random: options.random ?? Math.random,
    log: options.log ?? silentLogger,
  };
}


/**
 * One authenticated POST to Braze under the client's rate limit: counted, answered or, when
 * the network failed (timeout, reset, refused: Braze may or may not have it), a reason to retry.
 * The server's rate-limit headers are read from every answer.
 */
export async function postToBraze(
  url: URL,
  options: Pick<BrazeClientOptions, 'apiKey' | 'rateLimiter'>,
  timeoutMs: number,
  stats: RetryStats,
  body: string,
): Promise<{ response: PostResult } | { retry: string }> {
  await options.rateLimiter.acquire();
  stats.requests++;
  let response: PostResult;
  try {
    response = await postJson(url, { authorization: `Bearer ${options.apiKey}` }, body, timeoutMs);
  } catch (error) {
    return { retry: describeNetworkError(error) };
  }
  options.rateLimiter.observe(response.headers);
  return { response };
}
