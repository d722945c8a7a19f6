/**
 * Keeps requests under Braze's rate limit. Two signals, both honoured:
 * - our own budget: at most `limit` request starts in any sliding `windowMs` (stricter than a
 *   server's fixed windows, so it never causes a 429 by itself);
 * - the server's word: `X-RateLimit-Remaining` / `X-RateLimit-Reset` (epoch seconds) and 429s
 *   pause every caller until the reset time, exactly.
 * Callers acquire in FIFO order, so no batch starves. Pauses are bounded: a server asking
 * every request to wait longer than `maxPauseMs` (a Retry-After of a day) makes `acquire` throw
 * until then, so the run ends with its members pending instead of sleeping for a day; and every
 * pause ends at once when the process is asked to stop.
 */

import { AbortError } from '../errors.js';
import { silentLogger, type Logger } from '../log.js';
import { realClock, realSleep, throwIfStopped, type Clock, type Sleep } from './clock.js';
import { formatWait, LOGGED_WAIT_MS } from './with-retries.js';

export interface RateLimiterOptions {
  limit: number;
  windowMs: number;
  /** Pause when the server says fewer than this many requests remain (requests in flight). */
  reserve?: number;
  /**
   * Longest pause the server may impose (default 5 min, the retry time of a batch). Longer
   * rate-limit resets are capped (a badly skewed clock); a longer Retry-After refuses requests.
   */
  maxPauseMs?: number;
  clock?: Clock;
  sleep?: Sleep;
  log?: Logger;
}

export class RateLimiter {
  private readonly starts: number[] = [];
  private head = 0;
  private pausedUntil = 0;
  /** Set when the server asked for a wait longer than maxPauseMs: requests are refused until then. */
  private refused?: { untilMs: number; message: string };
  private queue: Promise<void> = Promise.resolve();
  private readonly clock: Clock;
  private readonly sleep: Sleep;
  private readonly log: Logger;
  private readonly maxPauseMs: number;

  constructor(private readonly options: RateLimiterOptions) {
    if (!(options.limit >= 1) || !(options.windowMs >= 1)) throw new RangeError('rate limit must be at least 1 request per window');
    this.clock = options.clock ?? realClock;
    this.sleep = options.sleep ?? realSleep;
    this.log = options.log ?? silentLogger;
    this.maxPauseMs = options.maxPauseMs ?? 5 * 60_000;
  }

  /** Wait until one more request may start, then count it. */
  acquire(): Promise<void> {
    const turn = this.queue.then(() => this.waitForSlot());
    this.queue = turn.catch(() => {});
    return turn;
  }

  private async waitForSlot(): Promise<void> {
    for (;;) {
      throwIfStopped('waiting for the rate limit');
      const now = this.clock();
      if (this.refused && this.refused.untilMs > now) throw new AbortError(this.refused.message);
      if (this.pausedUntil > now) {
        await this.sleep(this.pausedUntil - now);
        continue;
      }
      while (this.head < this.starts.length && this.starts[this.head]! <= now - this.options.windowMs) this.head++;
      if (this.head > 1024) {
        this.starts.splice(0, this.head);
        this.head = 0;
      }
      if (this.starts.length - this.head < this.options.limit) {
        this.starts.push(now);
        return;
      }
      await this.sleep(this.starts[this.head]! + this.options.windowMs - now);
    }
  }

  /**
   * Hold every caller until `untilMs` (epoch milliseconds), as a Retry-After asks. A wait
   * longer than maxPauseMs is not slept: requests are refused until then, with `why`.
   */
  pauseUntil(untilMs: number, why = 'the server asked every request to wait'): void {
    const now = this.clock();
    if (untilMs - now > this.maxPauseMs) {
      const message = `${why} ${formatWait(untilMs - now)} (until ${new Date(untilMs).toISOString()}), longer than the ${formatWait(this.maxPauseMs)} a run waits; stopping so that what is pending is sent by the next run`;
      if (!this.refused || untilMs > this.refused.untilMs) this.refused = { untilMs, message };
      return;
    }
    this.pause(untilMs);
  }

  private pause(untilMs: number): void {
    const capped = Math.min(untilMs, this.clock() + this.maxPauseMs);
    if (capped <= this.pausedUntil) return;
    if (capped - Math.max(this.clock(), this.pausedUntil) >= LOGGED_WAIT_MS) {
      this.log.info(`rate limited: pausing every request for ${formatWait(capped - this.clock())}`, { until: new Date(capped).toISOString() });
    }
    this.pausedUntil = capped;
  }

  /** Read the server's rate-limit headers from a response. */
  observe(headers: { get(name: string): string | null }): void {
    const remaining = Number(headers.get('x-ratelimit-remaining') ?? NaN);
    const reset = Number(headers.get('x-ratelimit-reset') ?? NaN);
    if (Number.isFinite(remaining) && Number.isFinite(reset) && remaining < (this.options.reserve ?? 1)) {
      this.pause(reset * 1000);
    }
  }
}

/** The wait a 429 (or 503) asks for: Retry-After (seconds or date) first, else the reset time. */
export function retryAfterMs(headers: { get(name: string): string | null }, now: number): number | undefined {
  const retryAfter = headers.get('retry-after');
  if (retryAfter) {
    const seconds = Number(retryAfter);
    if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000);
    const date = Date.parse(retryAfter);
    if (Number.isFinite(date)) return Math.max(0, date - now);
  }
  const reset = Number(headers.get('x-ratelimit-reset') ?? NaN);
  if (Number.isFinite(reset)) return Math.max(0, reset * 1000 - now);
  return undefined;
}
