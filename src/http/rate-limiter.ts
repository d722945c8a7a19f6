/**
 * Keeps requests under Braze's rate limit. Two signals, both honoured:
 * - our own budget: at most `limit` request starts in any sliding `windowMs` (stricter than a
 *   server's fixed windows, so it never causes a 429 by itself);
 * - the server's word: `X-RateLimit-Remaining` / `X-RateLimit-Reset` (epoch seconds) and 429s
 *   pause every caller until the reset time, exactly.
 * Callers acquire in FIFO order, so no batch starves.
 */

import { realClock, realSleep, type Clock, type Sleep } from './clock.js';

export interface RateLimiterOptions {
  limit: number;
  windowMs: number;
  /** Pause when the server says fewer than this many requests remain (requests in flight). */
  reserve?: number;
  /** Longest pause the server's headers may impose, to survive a badly skewed clock. */
  maxPauseMs?: number;
  clock?: Clock;
  sleep?: Sleep;
}

export class RateLimiter {
  private readonly starts: number[] = [];
  private head = 0;
  private pausedUntil = 0;
  private queue: Promise<void> = Promise.resolve();
  private readonly clock: Clock;
  private readonly sleep: Sleep;

  constructor(private readonly options: RateLimiterOptions) {
    if (!(options.limit >= 1) || !(options.windowMs >= 1)) throw new RangeError('rate limit must be at least 1 request per window');
    this.clock = options.clock ?? realClock;
    this.sleep = options.sleep ?? realSleep;
  }

  /** Wait until one more request may start, then count it. */
  acquire(): Promise<void> {
    const turn = this.queue.then(() => this.waitForSlot());
    this.queue = turn.catch(() => {});
    return turn;
  }

  private async waitForSlot(): Promise<void> {
    for (;;) {
      const now = this.clock();
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

  /** Hold every caller until `untilMs` (epoch milliseconds). */
  pauseUntil(untilMs: number): void {
    const capped = Math.min(untilMs, this.clock() + (this.options.maxPauseMs ?? 15 * 60_000));
    if (capped > this.pausedUntil) this.pausedUntil = capped;
  }

  /** Read the server's rate-limit headers from a response. */
  observe(headers: { get(name: string): string | null }): void {
    const remaining = Number(headers.get('x-ratelimit-remaining') ?? NaN);
    const reset = Number(headers.get('x-ratelimit-reset') ?? NaN);
    if (Number.isFinite(remaining) && Number.isFinite(reset) && remaining < (this.options.reserve ?? 1)) {
      this.pauseUntil(reset * 1000);
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
