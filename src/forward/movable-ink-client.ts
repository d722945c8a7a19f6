/**
 * Movable Ink's Customer Data API (behavioural events), one event per request, with Braze's
 * own webhook delivery rules: retry 408, 429 and 5xx with exponential backoff, up to 5
 * attempts within about 30 minutes; never retry other 4xx or 3xx; 90 s per request.
 */
import { AbortError, ConfigError } from '../errors.js';
import { describeNetworkError, postJson, type PostResult } from '../http/post-json.js';
import { withRetries, isRetryableStatus, type Attempt, type RetryStats } from '../http/with-retries.js';
import { silentLogger, type Logger } from '../log.js';
import { realClock, realSleep, type Clock, type Sleep } from '../http/clock.js';
import { RateLimiter, retryAfterMs } from '../http/rate-limiter.js';

export interface MovableInkOptions {
  /** The full behavioural URL including the key: https://collector.movableink-dmz.com/behavioral/<key> */
  endpoint: string;
  /** `user:password`, or the base64 of it. */
  auth: string;
  rateLimiter: RateLimiter;
  timeoutMs?: number;
  maxAttempts?: number;
  maxRetryTimeMs?: number;
  backoffMs?: number;
  clock?: Clock;
  sleep?: Sleep;
  random?: () => number;
  log?: Logger;
}

/** What happened to one event: accepted, or rejected for good (recorded, never retried). */
export type Delivery = { ok: true; status: number } | { ok: false; status: number; response: string };

const LOOPBACK = new Set(['localhost', '127.0.0.1', '[::1]', '::1']);

export class MovableInkClient {
  readonly stats: RetryStats = { requests: 0, retries: 0, rateLimited: 0 };
  private readonly url: URL;
  private readonly authorization: string;

  constructor(private readonly o: MovableInkOptions) {
    try {
      this.url = new URL(o.endpoint);
    } catch {
      throw new ConfigError(['MOVABLE_INK_ENDPOINT is not a URL; expected https://collector.movableink-dmz.com/behavioral/<key>']);
    }
    if (this.url.protocol !== 'https:' && !(this.url.protocol === 'http:' && LOOPBACK.has(this.url.hostname))) {
      throw new ConfigError(['MOVABLE_INK_ENDPOINT must use https:// (the credentials would travel in clear text)']);
    }
    this.authorization = `Basic ${o.auth.includes(':') ? Buffer.from(o.auth).toString('base64') : o.auth}`;
  }

  /** Send one event; throws AbortError when retries are exhausted (the event stays pending). */
  send(payload: object): Promise<Delivery> {
    const body = JSON.stringify(payload);
    return withRetries(
      {
        maxAttempts: this.o.maxAttempts ?? 5,
        backoffMs: this.o.backoffMs ?? 30_000,
        maxBackoffMs: 10 * 60_000,
        maxRetryTimeMs: this.o.maxRetryTimeMs ?? 30 * 60_000,
        clock: this.o.clock ?? realClock,
        sleep: this.o.sleep ?? realSleep,
        random: this.o.random ?? Math.random,
        log: this.o.log ?? silentLogger,
      },
      this.stats,
      () => this.attempt(body),
      (attempts, seconds, last) => new AbortError(`Movable Ink did not accept an event after ${attempts} attempts in ${seconds}s (last: ${last}); it stays pending for the next run`),
    );
  }

  /**
   * One request, no waiting: the relay runs the retries itself, so that a user waiting for a
   * retry does not hold a concurrency slot. Throws AbortError when the answer says the setup is
   * wrong (401, 403, 404, 3xx): every event would get it, so none is recorded.
   */
  attemptOnce(payload: object): Promise<Attempt<Delivery>> {
    return this.attempt(JSON.stringify(payload));
  }

  /** The retry policy's settings, for the relay's own retry loop. */
  get policy(): { maxAttempts: number; backoffMs: number; maxBackoffMs: number; clock: Clock; sleep?: Sleep; random: () => number } {
    return {
      maxAttempts: this.o.maxAttempts ?? 5,
      backoffMs: this.o.backoffMs ?? 30_000,
      maxBackoffMs: 10 * 60_000,
      clock: this.o.clock ?? realClock,
      // Absent unless injected: the relay then waits on a timer it can cancel on SIGTERM.
      sleep: this.o.sleep,
      random: this.o.random ?? Math.random,
    };
  }

  private async attempt(body: string): Promise<Attempt<Delivery>> {
    await this.o.rateLimiter.acquire();
    this.stats.requests++;
    let res: PostResult;
    try {
      res = await postJson(this.url, { authorization: this.authorization }, body, this.o.timeoutMs ?? 90_000);
    } catch (error) {
      return { kind: 'retry', reason: describeNetworkError(error) };
    }
    this.o.rateLimiter.observe(res.headers);
    if (res.status >= 200 && res.status < 300) return { kind: 'done', result: { ok: true, status: res.status } };
    if (res.status === 401 || res.status === 403) {
      // Every event would fail the same way; recording them as rejected would lose them.
      throw new AbortError(`Movable Ink answered ${res.status}: check MOVABLE_INK_AUTH and the key in MOVABLE_INK_ENDPOINT`);
    }
    if (res.status === 404 || (res.status >= 300 && res.status < 400)) {
      // A wrong URL (a wrong key in it, http for https, a moved host): the configuration's
      // fault, not the event's. Stop without recording, so fixing the URL sends the backlog.
      const location = res.headers.get('location') ? ' (redirected elsewhere)' : '';
      throw new AbortError(`Movable Ink answered ${res.status}${location}: check MOVABLE_INK_ENDPOINT (https://collector.movableink-dmz.com/behavioral/<key>); nothing was recorded`);
    }
    if (isRetryableStatus(res.status)) {
      const clock = this.o.clock ?? realClock;
      const waitMs = res.headers.get('retry-after') || res.headers.get('x-ratelimit-reset') ? retryAfterMs(res.headers, clock()) : undefined;
      if (waitMs !== undefined && res.status === 429) this.o.rateLimiter.pauseUntil(clock() + waitMs);
      return { kind: 'retry', reason: `${res.status}`, waitMs, rateLimited: res.status === 429 };
    }
    return { kind: 'done', result: { ok: false, status: res.status, response: res.text.slice(0, 500) } };
  }
}
