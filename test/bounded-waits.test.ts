/**
 * Every wait is bounded and interruptible: a Retry-After longer than the time left for a batch
 * ends its attempts; a signal ends every retry wait and rate-limit pause at once, and the run is
 * recorded interrupted.
 */
import { beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { BrazeSandbox } from '../src/braze/sandbox.js';
import { withRetries } from '../src/http/with-retries.js';
import { RateLimiter } from '../src/http/rate-limiter.js';
import { sleepUnless } from '../src/http/clock.js';
import { silentLogger } from '../src/log.js';
import { AbortError } from '../src/errors.js';
import type { TestDatabase } from './helpers/database.js';
import { audienceDir } from './helpers/audiences.js';
import { cli, startCli, waitFor } from './helpers/cli.js';
import { useDatabaseAndSandbox } from './helpers/fixture.js';

const dir = audienceDir({ people: 'SELECT id AS external_id, tier FROM people' });
// The test file's own database and sandbox (helpers/fixture.ts), under the names the tests use.
const f = useDatabaseAndSandbox();
let t: TestDatabase;
let sandbox: BrazeSandbox;
let env: Record<string, string>;
beforeAll(() => {
  ({ t, sandbox, env } = f);
});
beforeEach(async () => {
  await t.db.query(`
    DROP TABLE IF EXISTS people;
    CREATE TABLE people AS SELECT i AS id, 't' || (i % 4) AS tier FROM generate_series(1, 600) i;
    TRUNCATE braze_bridge.snapshots, braze_bridge.runs, braze_bridge.audiences CASCADE`);
  sandbox.reset();
  sandbox.faults = undefined;
});

const runs = async () =>
  (await t.db.query<{ status: string; error: string | null }>(`SELECT status, error FROM braze_bridge.runs WHERE audience = 'people' ORDER BY id`)).rows;
const snapshotted = async () => (await t.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM braze_bridge.snapshots WHERE audience = 'people'`)).rows[0]!.n;

describe('bounded waits through the CLI', () => {
  it.each([
    ['429', 429],
    ['503', 503],
  ])('a %s with Retry-After: 86400 ends the run within seconds, says why in one line, and leaves the members pending', async (_, status) => {
    sandbox.faults = ({ n }) => (n > 2 ? { status, retryAfter: '86400' } : undefined);
    const started = Date.now();
    const r = await cli(['sync', '--audiences', dir, '--concurrency', '2'], env);
    expect(Date.now() - started).toBeLessThan(20_000);
    expect(r.code).toBe(4);
    expect(r.stderr).toMatch(/wait 24 h/);
    const [run] = await runs();
    expect(run!.status).toBe('aborted');
    expect(run!.error).toMatch(/24 h/);
    // What Braze did not confirm is not in the snapshot: the next run sends it.
    expect(await snapshotted()).toBe(sandbox.profiles.size);
    expect(await snapshotted()).toBeLessThan(600);
    sandbox.faults = undefined;
    const again = await cli(['sync', '--audiences', dir, '--json'], env);
    expect(again.code).toBe(0);
    expect(sandbox.profiles.size).toBe(600);
  });

  it('SIGTERM during a long Retry-After wait ends the run within seconds, recorded interrupted, exit 143', async () => {
    sandbox.faults = ({ n }) => (n > 2 ? { status: 429, retryAfter: '120' } : undefined);
    const cliRun = startCli(['sync', '--audiences', dir, '--concurrency', '2'], env);
    // The wait is logged, so an operator watching a quiet run knows why.
    let stderr = '';
    cliRun.child.stderr!.on('data', (d) => (stderr += d));
    await waitFor(() => /waiting 2 min before retrying|pausing every request for 2 min/.test(stderr), 'the sync logs its long wait', { cli: cliRun });
    const signalled = Date.now();
    cliRun.child.kill('SIGTERM');
    const r = await cliRun.done;
    expect(Date.now() - signalled).toBeLessThan(10_000);
    expect(r.code).toBe(143);
    expect((await runs()).map((x) => x.status)).toEqual(['interrupted']);
    expect(await snapshotted()).toBe(sandbox.profiles.size);
  });
});

describe('the shared wait mechanism', () => {
  const policy = (over: Partial<Parameters<typeof withRetries>[0]> = {}) => {
    let now = 0;
    const slept: number[] = [];
    return {
      slept,
      policy: {
        maxAttempts: 6, backoffMs: 1000, maxBackoffMs: 30_000, maxRetryTimeMs: 300_000, random: () => 1, log: silentLogger,
        clock: () => now, sleep: async (ms: number) => void (slept.push(ms), (now += ms)), ...over,
      },
    };
  };

  it('a server-given wait longer than the time left ends the attempts at once, without sleeping', async () => {
    const p = policy();
    const stats = { requests: 0, retries: 0, rateLimited: 0 };
    await expect(withRetries(p.policy, stats, async () => ({ kind: 'retry', reason: '503', waitMs: 301_000 }), (n, s, last) => new AbortError(`gave up after ${n}: ${last}`)))
      .rejects.toThrow(/gave up after 1: 503; the server asked to wait 5 min, more than the 5 min left/);
    expect(p.slept).toEqual([]);
  });

  it('a wait that fits is honoured exactly; backoff never exceeds the time left', async () => {
    const p = policy({ maxRetryTimeMs: 10_000 });
    const stats = { requests: 0, retries: 0, rateLimited: 0 };
    let n = 0;
    const result = await withRetries(p.policy, stats, async () => (++n < 3 ? { kind: 'retry', reason: 'x', waitMs: n === 1 ? 4000 : undefined } : { kind: 'done', result: 'ok' }), () => new Error('no'));
    expect(result).toBe('ok');
    expect(p.slept).toEqual([4000, 2000]);
  });

  it('a rate limiter asked to pause longer than its maximum refuses requests instead of sleeping', async () => {
    let now = 1_000_000;
    const slept: number[] = [];
    const limiter = new RateLimiter({ limit: 10, windowMs: 1000, maxPauseMs: 60_000, clock: () => now, sleep: async (ms) => void (slept.push(ms), (now += ms)) });
    limiter.pauseUntil(now + 30_000);
    await limiter.acquire();
    expect(slept).toEqual([30_000]);
    limiter.pauseUntil(now + 86_400_000);
    await expect(limiter.acquire()).rejects.toThrow(/wait 24 h .*longer than the 60 s a run waits/);
    now += 86_400_001;
    await expect(limiter.acquire()).resolves.toBeUndefined();
  });

  it('sleepUnless ends at once when the signal aborts', async () => {
    const controller = new AbortController();
    const sleeping = sleepUnless(3_600_000, controller.signal);
    controller.abort('SIGTERM');
    await expect(Promise.race([sleeping.then(() => 'woke'), new Promise((r) => setTimeout(() => r('still asleep'), 1000))])).resolves.toBe('woke');
  });
});
