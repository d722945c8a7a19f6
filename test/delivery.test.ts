import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { BrazeSandbox } from '../src/braze/sandbox.js';
import { RateLimiter } from '../src/http/rate-limiter.js';
import { TrackClient, type TrackResult } from '../src/braze/track-client.js';
import { createTestDatabase, type TestDatabase } from './helpers/database.js';
import { audienceDir, fakeTime, run, testClient, TEST_KEY } from './helpers/audiences.js';

let t: TestDatabase;
let sandbox: BrazeSandbox;
const dir = audienceDir({ aud: `SELECT id AS external_id, tier FROM people` });

beforeAll(async () => {
  t = await createTestDatabase();
  await t.db.query(`CREATE TABLE people (id text PRIMARY KEY, tier text)`);
  sandbox = new BrazeSandbox({ apiKey: TEST_KEY });
  await sandbox.start();
});
afterAll(async () => {
  await sandbox?.stop();
  await t?.drop();
});
beforeEach(async () => {
  await t.db.query(`TRUNCATE people; INSERT INTO people SELECT 'p' || i, 'tier' || (i % 3) FROM generate_series(1, 150) i`);
  await t.db.query(`TRUNCATE braze_bridge.snapshots, braze_bridge.runs, braze_bridge.audiences CASCADE`);
  sandbox.reset();
  sandbox.faults = undefined;
});

const snapshotCount = async () => (await t.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM braze_bridge.snapshots`)).rows[0]!.n;

describe('delivery', () => {
  it('fails only the members named in errors[] and advances everyone else', async () => {
    sandbox.faults = ({ n }) => (n === 1 ? { itemErrors: [0, 5], type: "'external_id' is invalid" } : undefined);
    const summary = await run(t.db, dir, { client: testClient(sandbox.url), concurrency: 1 });
    const a = summary.audiences[0]!;
    expect(a.exitCode).toBe(1);
    expect(a.counts).toMatchObject({ new: 150, failed: 2, updates: 148 });
    expect(await snapshotCount()).toBe(148);
    const failed = sandbox.requests[0]!.attributes.filter((_, i) => i === 0 || i === 5).map((o) => o.external_id);
    const { rows } = await t.db.query(`SELECT member_key, reason FROM braze_bridge.member_failures ORDER BY member_key`);
    expect(rows).toEqual(failed.sort().map((k) => ({ member_key: k, reason: "Braze rejected the member: 'external_id' is invalid" })));
    // The next run sends exactly the two that failed.
    sandbox.faults = undefined;
    const mark = sandbox.requests.length;
    const again = await run(t.db, dir, { client: testClient(sandbox.url) });
    expect(again.audiences[0]!.counts).toMatchObject({ new: 2, failed: 0 });
    expect(sandbox.requests.slice(mark).flatMap((r) => r.attributes.map((o) => o.external_id)).sort()).toEqual(failed.sort());
  });

  it('assembles batches across chunk ends with awkward keys, each member once and with its own values', async () => {
    // Keys holding the characters the batch texts are split on (comma, U+001E), quotes, a
    // backslash, a line break and characters outside the BMP; a batch size that does not divide
    // a chunk's 450 members; and a member refused in the middle of a batch.
    const awkward = ['a,b', 'q"uote', 'back\\slash', 'rec\u001esep', 'emoji😀', 'new\nline', 'ü,\u001e,', '[1,2]'];
    await t.db.query(`TRUNCATE people; INSERT INTO people SELECT 'm' || i, 'tier' || (i % 5) FROM generate_series(1, 1493) i`);
    await t.db.query(`INSERT INTO people SELECT k, 'tier-' || k FROM unnest($1::text[]) AS k`, [awkward]);
    sandbox.faults = ({ n }) => (n === 3 ? { itemErrors: [4], type: 'invalid' } : undefined);
    const summary = await run(t.db, dir, { client: testClient(sandbox.url), concurrency: 3, batchSize: 7 });
    const a = summary.audiences[0]!;
    expect(a.counts).toMatchObject({ new: 1501, failed: 1, updates: 1500, requests: Math.ceil(1501 / 7) });
    expect(a.counts.perAttribute).toEqual({ tier: 1500 });
    const sent = sandbox.requests.flatMap((r) => r.attributes.map((o) => o.external_id as string));
    expect(sent).toHaveLength(1501);
    expect(new Set(sent).size).toBe(1501);
    expect(sandbox.requests.every((r) => r.attributes.length <= 7)).toBe(true);
    const refused = sandbox.requests.find((r) => r.n === 3)!.attributes[4]!.external_id as string;
    for (const key of [...awkward, 'm1', 'm1000', 'm1001', 'm1493'].filter((k) => k !== refused)) {
      expect(sandbox.profile({ external_id: key }), key).toMatchObject({ tier: key.startsWith('m') ? `tier${Number(key.slice(1)) % 5}` : `tier-${key}` });
    }
    const { rows } = await t.db.query<{ member_key: string }>(`SELECT member_key FROM braze_bridge.member_failures`);
    expect(rows).toEqual([{ member_key: refused }]);
    const { rows: held } = await t.db.query<{ member_key: string }>(`SELECT member_key FROM braze_bridge.snapshots WHERE member_key = ANY($1)`, [awkward]);
    expect(held.map((r) => r.member_key).sort()).toEqual(awkward.filter((k) => k !== refused).sort());
    expect(await snapshotCount()).toBe(1500);
  });

  it('retries 5xx, timeouts and dropped connections, and delivers everything once', async () => {
    const faults: Record<number, object> = { 1: { status: 503 }, 2: { drop: true }, 3: { delayMs: 2500 }, 4: { status: 500 } };
    sandbox.faults = ({ n }) => faults[n] as never;
    // A timeout well above what a healthy request takes even on a busy machine, and a delay well
    // above it: only the delayed request times out.
    const client = testClient(sandbox.url, { timeoutMs: 1000 });
    const summary = await run(t.db, dir, { client, concurrency: 1 });
    expect(summary.audiences[0]!.counts).toMatchObject({ new: 150, failed: 0, requests: 6, retries: 4 });
    expect(sandbox.profiles.size).toBe(150);
    expect(await snapshotCount()).toBe(150);
  });

  it('waits for the rate-limit reset on 429 and counts it', async () => {
    const time = fakeTime();
    const timed = new BrazeSandbox({ apiKey: TEST_KEY, clock: time.clock });
    await timed.start();
    try {
      timed.faults = ({ n }) => (n === 1 ? { status: 429, message: 'Too Many Requests', retryAfter: '0.3' } : undefined);
      const summary = await run(t.db, dir, { client: testClient(timed.url, { time }), concurrency: 1 });
      expect(summary.audiences[0]!.counts).toMatchObject({ rateLimited: 1, retries: 1, failed: 0 });
      const [limited, retried] = timed.requests;
      expect(limited).toMatchObject({ n: 1, status: 429 });
      expect(retried!.n).toBe(2);
      // Retry-After 0.3 s, honoured exactly: the retry went out 300 ms (fake) after the 429.
      expect(retried!.at - limited!.at).toBe(300);
    } finally {
      await timed.stop();
    }
  });

  it('stays under a server rate limit it shares headers with: no 429s', async () => {
    const time = fakeTime();
    const limited = new BrazeSandbox({ apiKey: TEST_KEY, rateLimit: { limit: 3, windowMs: 1000 }, clock: time.clock });
    await limited.start();
    try {
      const rateLimiter = new RateLimiter({ limit: 3, windowMs: 1000, reserve: 1, clock: time.clock, sleep: time.sleep });
      const client = testClient(limited.url, { time, rateLimiter });
      const started = time.now();
      const summary = await run(t.db, dir, { client, batchSize: 30, concurrency: 2 });
      expect(summary.audiences[0]!.counts).toMatchObject({ new: 150, requests: 5, rateLimited: 0 });
      expect(limited.counts.rateLimited).toBe(0);
      expect(time.now() - started).toBeGreaterThanOrEqual(1000); // five at three a second: the last two waited a window
    } finally {
      await limited.stop();
    }
  });

  it('when the server answers 429 with only X-RateLimit-Reset, waits for that reset and delivers everything', async () => {
    // The fake clock starts on a window boundary, so the three requests land in one window.
    const time = fakeTime();
    const strict = new BrazeSandbox({ apiKey: TEST_KEY, rateLimit: { limit: 2, windowMs: 1000 }, clock: time.clock });
    await strict.start();
    try {
      // Our own limit is far above the server's and the header pause is disabled (reserve 0):
      // only the 429s and their reset times keep this run in line.
      const rateLimiter = new RateLimiter({ limit: 100, windowMs: 1000, reserve: 0, clock: time.clock, sleep: time.sleep });
      const client = testClient(strict.url, { time, rateLimiter, maxAttempts: 10 });
      const started = time.now();
      const summary = await run(t.db, dir, { client, batchSize: 50, concurrency: 3 });
      expect(summary.audiences[0]!.counts).toMatchObject({ new: 150, failed: 0 });
      expect(summary.audiences[0]!.counts.rateLimited).toBeGreaterThan(0);
      expect(strict.profiles.size).toBe(150);
      expect(time.now() - started).toBeGreaterThanOrEqual(1000); // the third waited for the next window
      // Every 429 was retried only once the window it was refused in had ended.
      const accepted = strict.requests.filter((r) => r.status === 201);
      expect(accepted).toHaveLength(3);
      expect(accepted.at(-1)!.at).toBeGreaterThanOrEqual(started + 1000);
    } finally {
      await strict.stop();
    }
  });

  it('aborts the whole run at once on 401 and names the likely cause; nothing advances', async () => {
    const client = testClient(sandbox.url, { apiKey: 'wrong-key-000000000000' });
    const two = audienceDir({ a1: `SELECT id AS external_id, tier FROM people`, a2: `SELECT id AS external_id, tier AS tier2 FROM people` });
    const summary = await run(t.db, two, { client });
    expect(summary.exitCode).toBe(4);
    expect(summary.audiences).toHaveLength(1); // a2 was not attempted
    expect(summary.audiences[0]!.error).toMatch(/401 Unauthorized: the API key is wrong, or BRAZE_REST_ENDPOINT .* is not your workspace's instance/);
    expect(summary.audiences[0]!.error).not.toContain('wrong-key');
    expect(await snapshotCount()).toBe(0);
    expect(client.stats.requests).toBeLessThanOrEqual(4); // the in-flight ones, no more
  });

  it('treats a 2xx whose message is not success as a failure of those members', async () => {
    sandbox.faults = ({ n }) => (n === 1 ? { message: 'queued for later' } : undefined);
    const summary = await run(t.db, dir, { client: testClient(sandbox.url), concurrency: 1 });
    expect(summary.audiences[0]!.counts).toMatchObject({ failed: 75 });
    expect(await snapshotCount()).toBe(75);
  });

  it('gives up after the attempt limit with exit 4; confirmed batches stay confirmed', async () => {
    sandbox.faults = ({ n }) => (n >= 2 ? { status: 502 } : undefined);
    const summary = await run(t.db, dir, { client: testClient(sandbox.url, { maxAttempts: 3 }), concurrency: 1 });
    expect(summary.exitCode).toBe(4);
    expect(summary.audiences[0]!.error).toMatch(/did not accept a batch after 3 attempts.*502/);
    expect(await snapshotCount()).toBe(75);
  });

  it('refuses a batch size the workspace does not accept, with the fix', async () => {
    const small = new BrazeSandbox({ apiKey: TEST_KEY, maxObjects: 50 });
    await small.start();
    try {
      const summary = await run(t.db, dir, { client: testClient(small.url) });
      expect(summary.exitCode).toBe(4);
      expect(summary.audiences[0]!.error).toMatch(/lower --batch-size \(50 for MAU CY 24-25 contracts\)/);
    } finally {
      await small.stop();
    }
  });

  it('lets only one run of an audience hold the lock; the other exits 3 and sends nothing', async () => {
    // Hold the first run at its first request (it holds the lock by then) until the second has tried.
    const held = new BrazeSandbox({ apiKey: TEST_KEY });
    await held.start();
    let entered!: () => void;
    const inside = new Promise<void>((r) => (entered = r));
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    class HeldClient extends TrackClient {
      override async track(attributes: readonly string[]): Promise<TrackResult> {
        entered();
        await gate;
        return super.track(attributes);
      }
    }
    try {
      const first = run(t.db, dir, { client: new HeldClient({ endpoint: held.url, apiKey: TEST_KEY, rateLimiter: new RateLimiter({ limit: 10_000, windowMs: 1000 }) }), concurrency: 1 });
      first.catch(() => {}); // awaited below; a failure of the second must not leave it unhandled
      await inside;
      try {
        const second = await run(t.db, dir, { client: testClient(sandbox.url) });
        expect(second.exitCode).toBe(3);
        expect(second.audiences[0]!.error).toMatch(/being synced by another run/);
        expect(sandbox.requests).toHaveLength(0);
      } finally {
        release();
      }
      expect((await first).exitCode).toBe(0);
      expect(held.profiles.size).toBe(150);
    } finally {
      await held.stop();
    }
  });
});
