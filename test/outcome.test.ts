/**
 * One outcome model: every job ends in one outcome, one function turns it (or an error) into an
 * exit code, and the CLI keeps to it however a run ends — a connection refused at start is
 * configuration (exit 2, with the server's reason), a connection lost mid-run or an error nobody
 * caught is a stopped run (exit 4).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { AudienceError, BrazeHttpError, ConfigError, DatabaseError, exitCodeFor, ExitCode, outcomeOfError, combineExitCodes } from '../src/errors.js';
import { BrazeSandbox } from '../src/braze/sandbox.js';
import { useDatabaseAndSandbox } from './helpers/fixture.js';
import { audienceDir, TEST_KEY } from './helpers/audiences.js';
import { cli, startCli, waitFor } from './helpers/cli.js';

const f = useDatabaseAndSandbox(async (t) => {
  await t.db.query(`CREATE TABLE people (id int PRIMARY KEY, tier text)`);
  await t.db.query(`INSERT INTO people SELECT i, 't' || (i % 5) FROM generate_series(1, 600) i`);
});

describe('outcomes and exit codes', () => {
  it('maps every outcome and error class to its documented exit code in one place', () => {
    expect(['succeeded', 'planned', 'partial', 'failed', 'locked', 'aborted', 'interrupted'].map((o) => exitCodeFor(o))).toEqual([0, 0, 1, 2, 3, 4, 4]);
    expect(exitCodeFor(new ConfigError(['x']))).toBe(ExitCode.config);
    expect(exitCodeFor(new AudienceError('a.sql', 'bad'))).toBe(ExitCode.config);
    expect(exitCodeFor(new BrazeHttpError('401', 401))).toBe(ExitCode.aborted);
    expect(exitCodeFor(new DatabaseError('lost', '57P01', undefined))).toBe(ExitCode.aborted);
    expect(exitCodeFor(new TypeError('a bug'))).toBe(ExitCode.aborted);
    expect(outcomeOfError(new ConfigError(['x']))).toBe('failed');
    expect(outcomeOfError(new Error('x'))).toBe('aborted');
    expect(combineExitCodes([0, 1, 3, 2])).toBe(2);
    expect(combineExitCodes([0, 4, 2])).toBe(4);
    expect(combineExitCodes([])).toBe(0);
  });

  it('a database that refuses the connection at start is configuration: exit 2, one line', async () => {
    const dir = audienceDir({ a: 'SELECT id AS external_id FROM people' });
    const r = await cli(['plan', '--audiences', dir], { DATABASE_URL: 'postgres://nobody@127.0.0.1:1/none' });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/cannot connect to PostgreSQL \(ECONNREFUSED\)/);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
  });

  it('a refused login is configuration and keeps the server\'s own reason, never the password', async () => {
    const url = new URL(f.t.url);
    url.password = 'definitely-wrong-password';
    const dir = audienceDir({ a: 'SELECT id AS external_id FROM people' });
    const r = await cli(['plan', '--audiences', dir], { DATABASE_URL: url.toString() });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/PostgreSQL refused the connection: password authentication failed for user .* \(28P01\)/);
    expect(r.stderr).not.toContain('definitely-wrong-password');
  });

  it('a connection lost in the middle of a sync is a stopped run: exit 4, the run can be resumed', async () => {
    const slow = new BrazeSandbox({ apiKey: TEST_KEY, latencyMs: 150 });
    await slow.start();
    try {
      const dir = audienceDir({ lost: 'SELECT id AS external_id, tier FROM people' });
      const url = new URL(f.t.url);
      url.searchParams.set('application_name', 'bb_lost_test'); // to find the CLI's sessions, and only them
      const env = { DATABASE_URL: url.toString(), BRAZE_REST_ENDPOINT: slow.url, BRAZE_API_KEY: TEST_KEY };
      const run = startCli(['sync', '--audiences', dir, '--concurrency', '1', '--state-schema', 'lost_state'], env);
      await waitFor(() => slow.counts.requests >= 2, 'two requests sent', { cli: run });
      // What a failover or a restarted server does to the run's sessions.
      await f.t.db.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'bb_lost_test'`);
      const r = await run.done;
      expect(r.code).toBe(4);
      expect(r.stderr).toMatch(/lost the connection to PostgreSQL mid-run/);
      // Nothing confirmed was lost: the next run sends the rest and converges.
      const again = await cli(['sync', '--audiences', dir, '--state-schema', 'lost_state'], env);
      expect(again.code).toBe(0);
      expect(slow.profiles.size).toBe(600);
    } finally {
      await slow.stop();
    }
  });

  it('a snapshot write that fails mid-delivery aborts the run (exit 4) with the counts of what Braze accepted; the next run converges', async () => {
    const dir = audienceDir({ refused: 'SELECT id AS external_id, tier FROM people' });
    const env = { DATABASE_URL: f.t.url, BRAZE_REST_ENDPOINT: f.sandbox.url, BRAZE_API_KEY: TEST_KEY };
    await f.t.db.query(`CREATE SCHEMA IF NOT EXISTS refused_state`);
    const first = await cli(['migrate', '--state-schema', 'refused_state'], env);
    expect(first.code, first.stderr).toBe(0);
    // The state table refuses one member's row: the group holding it cannot be recorded.
    await f.t.db.query(`CREATE FUNCTION refused_state.no_p300() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN IF NEW.member_key = '300' THEN RAISE EXCEPTION 'refused by a trigger'; END IF; RETURN NEW; END $$`);
    await f.t.db.query(`CREATE TRIGGER no_p300 BEFORE INSERT ON refused_state.snapshots FOR EACH ROW EXECUTE FUNCTION refused_state.no_p300()`);
    f.sandbox.reset();
    const r = await cli(['sync', '--audiences', dir, '--state-schema', 'refused_state', '--json'], env);
    expect(r.code).toBe(4);
    expect(r.stderr).toMatch(/recording what Braze confirmed failed/);
    const a = JSON.parse(r.stdout).audiences[0];
    expect(a.status).toBe('aborted');
    // Braze accepted these: the summary and the run history say so.
    expect(a.counts.updates).toBeGreaterThan(0);
    expect(a.counts.updates).toBe(f.sandbox.requests.filter((q) => q.status === 201).reduce((n, q) => n + q.attributes.length * 1, 0));
    const run = await f.t.db.query<{ status: string; updates: number }>(`SELECT status, (counts->>'updates')::int AS updates FROM refused_state.runs ORDER BY id DESC LIMIT 1`);
    expect(run.rows[0]).toEqual({ status: 'aborted', updates: a.counts.updates });
    // Nothing of the failed group was recorded; the next run sends what is missing and converges.
    await f.t.db.query(`DROP TRIGGER no_p300 ON refused_state.snapshots`);
    const again = await cli(['sync', '--audiences', dir, '--state-schema', 'refused_state', '--json'], env);
    expect(again.code, again.stderr).toBe(0);
    const recorded = await f.t.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM refused_state.snapshots`);
    expect(recorded.rows[0]!.n).toBe(600);
    expect(f.sandbox.profiles.size).toBe(600);
  });

  it('an error nobody caught exits 4 through the logger, not 1 ("some members failed")', async () => {
    const slow = new BrazeSandbox({ apiKey: TEST_KEY, latencyMs: 200 });
    await slow.start();
    const hooks = mkdtempSync(join(tmpdir(), 'bb-crash-'));
    try {
      const dir = audienceDir({ crash: 'SELECT id AS external_id, tier FROM people' });
      // A bug in a callback, thrown outside any promise chain the command awaits.
      const hook = join(hooks, 'hook.mjs');
      // Thrown once the run is under way (the test says when), not after a fixed delay that a
      // slow start (loading the CLI) can outlast.
      const trigger = join(hooks, 'go');
      writeFileSync(hook, `import { existsSync } from 'node:fs';
        const poll = setInterval(() => { if (existsSync(${JSON.stringify(trigger)})) { clearInterval(poll); throw new Error('a bug in a timer'); } }, 10);
        poll.unref();\n`);
      const started = startCli(['sync', '--audiences', dir, '--state-schema', 'crash_state'], {
        DATABASE_URL: f.t.url,
        BRAZE_REST_ENDPOINT: slow.url,
        BRAZE_API_KEY: TEST_KEY,
        NODE_OPTIONS: `--import ${hook}`,
      });
      await waitFor(() => slow.counts.requests >= 1, 'the sync sends', { cli: started });
      writeFileSync(trigger, '');
      const r = await started.done;
      expect(r.code).toBe(4);
      expect(r.stderr).toMatch(/unexpected error: Error: a bug in a timer/);
    } finally {
      await slow.stop();
      rmSync(hooks, { recursive: true, force: true });
    }
  });
});
