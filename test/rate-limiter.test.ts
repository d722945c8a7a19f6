import { describe, expect, it } from 'vitest';
import { RateLimiter, retryAfterMs } from '../src/http/rate-limiter.js';

/** A clock that only moves when somebody sleeps. */
function fakeTime() {
  let now = 1_000_000;
  return { clock: () => now, sleep: async (ms: number) => void (now += Math.max(ms, 0)), now: () => now };
}

const headers = (h: Record<string, string>) => new Headers(h);

describe('rate limiter', () => {
  it('allows at most `limit` starts in any sliding window', async () => {
    const t = fakeTime();
    const limiter = new RateLimiter({ limit: 3, windowMs: 1000, ...t });
    const starts: number[] = [];
    for (let i = 0; i < 9; i++) {
      await limiter.acquire();
      starts.push(t.now());
    }
    for (let i = 3; i < starts.length; i++) expect(starts[i]! - starts[i - 3]!).toBeGreaterThanOrEqual(1000);
    expect(starts[8]! - starts[0]!).toBe(2000); // no slower than needed either
  });

  it('pauses every caller until the reset the server announces', async () => {
    const t = fakeTime();
    const limiter = new RateLimiter({ limit: 100, windowMs: 1000, reserve: 2, ...t });
    await limiter.acquire();
    limiter.observe(headers({ 'x-ratelimit-remaining': '1', 'x-ratelimit-reset': String((t.now() + 2500) / 1000) }));
    await limiter.acquire();
    expect(t.now()).toBe(1_000_000 + 2500);
    limiter.observe(headers({ 'x-ratelimit-remaining': '50', 'x-ratelimit-reset': String((t.now() + 9000) / 1000) }));
    const before = t.now();
    await limiter.acquire();
    expect(t.now()).toBe(before); // plenty remaining: no pause
  });

  it('reads Retry-After in seconds or as a date, else the reset header', () => {
    expect(retryAfterMs(headers({ 'retry-after': '2' }), 0)).toBe(2000);
    expect(retryAfterMs(headers({ 'retry-after': new Date(10_000).toUTCString() }), 4000)).toBe(6000);
    expect(retryAfterMs(headers({ 'x-ratelimit-reset': '12' }), 10_000)).toBe(2000);
    expect(retryAfterMs(headers({}), 0)).toBeUndefined();
  });
});
