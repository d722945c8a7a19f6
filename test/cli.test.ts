import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BrazeSandbox } from '../src/braze/sandbox.js';
import { RECORD_GROUP } from '../src/audience/deliver-deltas.js';
import { createTestDatabase, type TestDatabase } from './helpers/database.js';
import { audienceDir, TEST_KEY } from './helpers/audiences.js';
import { cli, startCli, waitFor } from './helpers/cli.js';

let t: TestDatabase;
let sandbox: BrazeSandbox;
let env: Record<string, string>;

beforeAll(async () => {
  t = await createTestDatabase();
  sandbox = new BrazeSandbox({ apiKey: TEST_KEY });
  await sandbox.start();
  env = { DATABASE_URL: t.url, BRAZE_REST_ENDPOINT: sandbox.url, BRAZE_API_KEY: TEST_KEY };
  await t.db.query(`CREATE TABLE people (id int PRIMARY KEY, tier text, score numeric, tags text[], seen timestamptz)`);
  await t.db.query(`INSERT INTO people SELECT i, 't' || (i % 5), i / 7.0, ARRAY['a' || (i % 3)], timestamptz '2026-01-01' + i * interval '1 minute' FROM generate_series(1, 3000) i`);
});
afterAll(async () => {
  await sandbox?.stop();
  await t?.drop();
});

describe('the CLI as a process', () => {
  it('--help lists the commands, the environment variables and the exit codes', async () => {
    const r = await cli(['--help']);
    expect(r.code).toBe(0);
    for (const s of ['sync', 'plan', 'backfill', 'migrate', 'DATABASE_URL', 'BRAZE_REST_ENDPOINT', 'BRAZE_API_KEY', '3  another run of the same audience holds the lock']) {
      expect(r.stdout).toContain(s);
    }
  });

  it('exits 2 with one clear line when the Braze settings are missing', async () => {
    const dir = audienceDir({ a: 'SELECT id AS external_id FROM people' });
    const r = await cli(['sync', '--audiences', dir], { DATABASE_URL: t.url });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/BRAZE_REST_ENDPOINT is not set.*BRAZE_API_KEY is not set.*--dry-run/);
  });

  it('refuses plain http to a non-loopback endpoint (the key would travel in clear text)', async () => {
    const r = await cli(['sync'], { ...env, BRAZE_REST_ENDPOINT: 'http://rest.iad-01.braze.com' });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/must use https:\/\//);
  });

  it('rejects unknown flags and out-of-range values with exit 2', async () => {
    expect((await cli(['sync', '--batch-sise', '10'], env)).code).toBe(2);
    const r = await cli(['sync', '--batch-size', '100', '--concurrency', '0'], env);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--batch-size must be a whole number from 1 to 75.*--concurrency must be/);
  });

  it('reports a bad audience file with its line, runs the others, and exits 2', async () => {
    const dir = audienceDir({
      broken: '-- @identifier external_id\nSELECT id AS external_id,\n       tier\nFROM peopel',
      unknown_key: '-- @colour blue\nSELECT 1 AS external_id',
      two: 'SELECT id AS external_id FROM people; DELETE FROM people',
      good: 'SELECT id AS external_id, tier FROM people WHERE id <= 10',
    });
    const r = await cli(['sync', '--audiences', dir, '--json'], env);
    expect(r.code).toBe(2);
    const summary = JSON.parse(r.stdout);
    const byName = Object.fromEntries(summary.audiences.map((a: { audience: string }) => [a.audience, a]));
    expect(byName.broken.error).toMatch(/broken\.sql:4: .*relation "peopel" does not exist/);
    expect(byName.unknown_key.error).toMatch(/unknown_key\.sql:1: @colour is not a known header key/);
    expect(byName.two.error).toMatch(/two\.sql:1: more than one statement/);
    expect(byName.good.status).toBe('succeeded');
    expect(sandbox.profile({ external_id: '10' })).toEqual({ tier: 't0' });
    expect((await t.db.query('SELECT count(*)::int AS n FROM people')).rows[0]).toEqual({ n: 3000 });
  });

  it('never prints the API key, even at debug level and on a 401', async () => {
    const dir = audienceDir({ a: 'SELECT id AS external_id, tier FROM people WHERE id <= 3' });
    const secret = 'sk-live-this-is-the-secret-key-42';
    // Its own state schema: other tests' audiences write tier too (one attribute, one owner).
    const r = await cli(['sync', '--audiences', dir, '--state-schema', 'secret_state'], { ...env, BRAZE_API_KEY: secret, LOG_LEVEL: 'debug' });
    expect(r.code).toBe(4);
    expect(r.stderr).toMatch(/401 Unauthorized/);
    expect(r.stdout + r.stderr).not.toContain(secret);
    const { rows } = await t.db.query(`SELECT args::text || coalesce(error, '') AS s FROM secret_state.runs`);
    expect(rows.map((x) => x.s).join('')).not.toContain(secret);
  });

  it('kill -9 in the middle of a run, then a re-run: converges, nothing lost, at most in-flight and unrecorded batches resent', async () => {
    const dir = audienceDir({ crash: `SELECT id AS external_id, tier, score, tags, seen FROM people` });
    // Slow enough that the group commit's time limit (RECORD_GROUP.maxDelayMs) records groups
    // while the run goes on: the kill lands between two of them.
    const slow = new BrazeSandbox({ apiKey: TEST_KEY, latencyMs: 120 });
    await slow.start();
    try {
      const e = { ...env, BRAZE_REST_ENDPOINT: slow.url };
      // Its own state schema: other tests' audiences write tier too (one attribute, one owner).
      const started = startCli(['sync', 'crash', '--audiences', dir, '--concurrency', '2', '--state-schema', 'crash_state'], e);
      const { child, done } = started;
      const recorded = async () => {
        const exists = await t.db.query<{ t: string | null }>(`SELECT to_regclass('crash_state.snapshots')::text AS t`);
        if (!exists.rows[0]!.t) return 0;
        return (await t.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM crash_state.snapshots WHERE audience = 'crash'`)).rows[0]!.n;
      };
      let seen = 0;
      await waitFor(async () => (seen = await recorded()) > 0 && slow.counts.requests * 75 > seen + 150, 'a group recorded and more sent since', { cli: started });
      child.kill('SIGKILL');
      const killedAt = Date.now();
      const killed = await done;
      expect(killed.signal).toBe('SIGKILL');
      const confirmed = await recorded();
      expect(confirmed).toBeGreaterThan(0);
      expect(confirmed).toBeLessThan(3000);
      // The bound the README states: what was in flight, plus the answers of the last
      // RECORD_GROUP.maxDelayMs not yet recorded (here fewer than RECORD_GROUP.maxMembers).
      const lastSecond = slow.requests.filter((r) => r.at >= killedAt - RECORD_GROUP.maxDelayMs - 250).length;
      const bound = (2 + lastSecond) * 75;

      const rerun = await cli(['sync', 'crash', '--audiences', dir, '--json', '--state-schema', 'crash_state'], e);
      expect(rerun.code).toBe(0);
      const counts = JSON.parse(rerun.stdout).audiences[0].counts;
      expect(counts.new).toBe(3000 - confirmed); // exactly what had not been confirmed

      // The sandbox holds exactly the audience.
      const { rows } = await t.db.query<{ id: number; tier: string; score: string; tags: string[]; seen: Date }>(`SELECT * FROM people ORDER BY id`);
      for (const row of rows) {
        expect(slow.profile({ external_id: String(row.id) })).toEqual({ tier: row.tier, score: Number(row.score), tags: row.tags, seen: row.seen.toISOString() });
      }
      // No member got more than its 4 attributes plus one resend; the resent are within the bound.
      const updates = [...slow.updatesByProfile.values()];
      expect(Math.max(...updates)).toBeLessThanOrEqual(8);
      expect(updates.filter((n) => n > 4).length).toBeLessThanOrEqual(bound);
      expect(updates.filter((n) => n > 4).length).toBeLessThan(RECORD_GROUP.maxMembers);
      const runs = await t.db.query(`SELECT status FROM crash_state.runs WHERE audience = 'crash' ORDER BY id`);
      expect(runs.rows).toEqual([{ status: 'abandoned' }, { status: 'succeeded' }]);
    } finally {
      await slow.stop();
    }
  });
});
