/** Writing audience files into a temporary folder, and running them through the library. */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RateLimiter } from '../../src/http/rate-limiter.js';
import { TrackClient } from '../../src/braze/track-client.js';
import { runAudiences, type RunSummary } from '../../src/audience/run-audiences.js';
import type { SyncMode } from '../../src/audience/sync-audience.js';
import type { Database } from '../../src/db/pool.js';
import { silentLogger } from '../../src/log.js';

export function audienceDir(files: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), 'bb-audiences-'));
  writeAudiences(dir, files);
  return dir;
}

export function writeAudiences(dir: string, files: Record<string, string>): void {
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, `${name}.sql`), text);
}

export const TEST_KEY = 'test-key-0123456789abcdef';

/**
 * A clock that moves only when somebody sleeps: a sleep of `ms` wakes at once, with the clock
 * at least `ms` past the moment it was asked. Time never goes back, so sleeps that overlap
 * still each see their full wait; tests assert on `now()` instead of waiting on the wall.
 * Starts on a whole second, so a server's fixed windows begin with the test.
 */
export interface FakeTime {
  clock: () => number;
  sleep: (ms: number) => Promise<void>;
  now: () => number;
  /** Every sleep asked for, in order. */
  readonly slept: number[];
}

export function fakeTime(start = 1_000_000): FakeTime {
  let now = start;
  const slept: number[] = [];
  return {
    clock: () => now,
    now: () => now,
    slept,
    sleep: async (ms) => {
      const wake = now + Math.max(0, ms);
      slept.push(ms);
      // Yield to I/O as a real sleep would, without waiting on the wall clock.
      await new Promise((resolve) => setImmediate(resolve));
      now = Math.max(now, wake);
    },
  };
}

export type TestClientOptions = Partial<ConstructorParameters<typeof TrackClient>[0]> & {
  /** Time for the client and its default rate limiter; a fresh fake time unless given. Pass the
   * same one to a `rateLimiter` (and a sandbox) of your own, so they share one clock. */
  time?: FakeTime;
};

/** A client whose backoff and rate-limit waits run on a fake clock: no test waits for them. */
export function testClient(endpoint: string, options: TestClientOptions = {}): TrackClient {
  const { time = fakeTime(), ...rest } = options;
  return new TrackClient({
    endpoint,
    apiKey: TEST_KEY,
    rateLimiter: new RateLimiter({ limit: 10_000, windowMs: 1000, clock: time.clock, sleep: time.sleep }),
    backoffMs: 5,
    maxBackoffMs: 50,
    timeoutMs: 2_000,
    clock: time.clock,
    sleep: time.sleep,
    random: () => 0.5,
    ...rest,
  });
}

export interface RunOptions {
  mode?: SyncMode;
  names?: string[];
  client?: TrackClient;
  batchSize?: number;
  concurrency?: number;
  maxChangeRatio?: number;
  /** The guardrail applies from this many exits plus value changes (the CLI's default is 100). */
  minChangeCount?: number;
  force?: boolean;
  adopt?: boolean;
  dryRun?: boolean;
  outFile?: string;
  schema?: string;
}

export function run(db: Database, dir: string, options: RunOptions = {}): Promise<RunSummary> {
  return runAudiences(
    { db, schema: options.schema ?? 'braze_bridge', log: silentLogger, client: options.client },
    { dir, names: options.names },
    {
      mode: options.mode ?? 'sync',
      batchSize: options.batchSize ?? 75,
      concurrency: options.concurrency ?? 4,
      maxChangeRatio: options.maxChangeRatio ?? 0.5,
      minChangeCount: options.minChangeCount,
      force: options.force ?? false,
      adopt: options.adopt,
      dryRun: options.dryRun,
      outFile: options.outFile,
    },
  );
}
