import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { BrazeSandbox } from '../src/braze/sandbox.js';
import type { TestDatabase } from './helpers/database.js';
import { audienceDir, run, testClient, TEST_KEY } from './helpers/audiences.js';
import { cli, startCli, waitFor } from './helpers/cli.js';
import { S3_ENV, startS3, type TestS3 } from './helpers/s3.js';
import { currentsKey, emailSendV1, emailSends, encodeAvro } from './helpers/avro.js';
import { startWebhook } from './helpers/webhook.js';
import { useDatabaseAndSandbox } from './helpers/fixture.js';

const dir = audienceDir({ people: 'SELECT id AS external_id, tier, score FROM people' });
// The test file's own database and sandbox (helpers/fixture.ts), under the names the tests use.
const f = useDatabaseAndSandbox();
let t: TestDatabase;
let sandbox: BrazeSandbox;
let env: Record<string, string>;
beforeAll(() => {
  ({ t, sandbox, env } = f);
});
// Every test starts from 3,000 people, no run history, no snapshots and an empty sandbox.
beforeEach(async () => {
  await t.db.query(`
    DROP TABLE IF EXISTS people;
    CREATE TABLE people AS SELECT i AS id, 't' || (i % 4) AS tier, i AS score FROM generate_series(1, 3000) i;
    TRUNCATE braze_bridge.snapshots, braze_bridge.runs, braze_bridge.audiences CASCADE`);
  sandbox.reset();
  sandbox.faults = undefined;
});

/** A completed sync of every person (recorded as a succeeded run); the sandbox is then emptied. */
async function syncEveryone(): Promise<void> {
  const summary = await run(t.db, dir, { client: testClient(sandbox.url) });
  expect(summary.audiences[0]).toMatchObject({ status: 'succeeded', counts: { new: 3000 } });
  sandbox.reset();
}

const runsOf = async (audience: string) =>
  (await t.db.query<{ status: string }>(`SELECT status FROM braze_bridge.runs WHERE audience = $1 ORDER BY id`, [audience])).rows.map((r) => r.status);

describe('running unattended', () => {
  it('SIGTERM in the middle of a sync: in-flight batches finish and are recorded, the run is interrupted, exit 143; the next run converges', async () => {
    const slow = new BrazeSandbox({ apiKey: TEST_KEY, latencyMs: 40 });
    await slow.start();
    try {
      const e = { ...env, BRAZE_REST_ENDPOINT: slow.url };
      const started = startCli(['sync', '--audiences', dir, '--concurrency', '2'], e);
      const { child, done } = started;
      await waitFor(() => slow.counts.requests >= 8, 'the sync has sent 8 requests', { cli: started });
      child.kill('SIGTERM');
      const atSignal = slow.counts.requests;
      const r = await done;
      expect(r.code).toBe(143);
      expect(r.stderr).toMatch(/SIGTERM: finishing in-flight work/);
      // Only what was in flight (2), and at most one started before the child handled the signal.
      expect(slow.counts.requests - atSignal).toBeLessThanOrEqual(3);
      expect(await runsOf('people')).toEqual(['interrupted']);
      // Every member Braze accepted is in the snapshot, and nothing else.
      const snap = await t.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM braze_bridge.snapshots WHERE audience = 'people'`);
      expect(snap.rows[0]!.n).toBe(slow.profiles.size);
      expect(snap.rows[0]!.n).toBeLessThan(3000);

      const again = await cli(['sync', '--audiences', dir, '--json'], e);
      expect(again.code).toBe(0);
      expect(JSON.parse(again.stdout).audiences[0].counts.new).toBe(3000 - snap.rows[0]!.n);
      expect(slow.profiles.size).toBe(3000);
      expect(Math.max(...slow.updatesByProfile.values())).toBe(2); // each member sent exactly once
    } finally {
      await slow.stop();
    }
  });

  it('writes the metrics file atomically and status / failures show the history', async () => {
    const metrics = join(mkdtempSync(join(tmpdir(), 'bb-metrics-')), 'braze_bridge.prom');
    // The history so far: a run stopped by a signal, then one that synced everyone.
    await t.db.query(`INSERT INTO braze_bridge.runs (job, audience, status, error, started_at, finished_at) VALUES ('sync', 'people', 'interrupted', 'stopped by a signal; unconfirmed members are sent next run', now() - interval '2 hours', now() - interval '2 hours')`);
    await syncEveryone();
    await t.db.query(`UPDATE people SET tier = 'vip' WHERE id <= 10`);
    // A run older than --keep-days (30) is pruned at the end of the next run.
    await t.db.query(`INSERT INTO braze_bridge.runs (job, audience, status, started_at, finished_at) VALUES ('sync', 'old', 'succeeded', now() - interval '40 days', now() - interval '40 days')`);
    sandbox.faults = ({ n }) => (n === 1 ? { itemErrors: [0, 1, 2] } : undefined);
    const r = await cli(['sync', '--audiences', dir, '--metrics-file', metrics], env);
    sandbox.faults = undefined;
    expect(r.code).toBe(1);
    expect(await runsOf('old')).toEqual([]);
    const text = readFileSync(metrics, 'utf8');
    expect(text).toContain('# TYPE braze_bridge_runs_total counter');
    expect(text).toContain('braze_bridge_runs_total{job="sync",audience="people",outcome="interrupted"} 1');
    expect(text).toContain('braze_bridge_runs_total{job="sync",audience="people",outcome="partial"} 1');
    expect(text).toMatch(/braze_bridge_last_run_members\{job="sync",audience="people",kind="changed"\} 10\n/);
    expect(text).toMatch(/braze_bridge_last_run_members\{job="sync",audience="people",kind="failed"\} 3\n/);
    expect(text).toMatch(/braze_bridge_last_run_updates_sent\{job="sync",audience="people"\} 7\n/);
    expect(text).toMatch(/braze_bridge_last_success_timestamp_seconds\{job="sync",audience="people"\} \d{10}/);

    const status = await cli(['status'], env);
    expect(status.code, status.stderr).toBe(0);
    expect(status.stdout).toMatch(/sync\s+people\s+partial/);
    const history = JSON.parse((await cli(['status', 'people', '--runs', '20', '--json'], env)).stdout);
    expect(history.map((h: { status: string }) => h.status)).toEqual(['partial', 'succeeded', 'interrupted']);
    const failures = await cli(['failures', 'people'], env);
    expect(failures.stdout.trim().split('\n')).toHaveLength(4);
    expect(failures.stdout).toMatch(/3 failed member\(s\)[\s\S]*\tBraze rejected the member: 'external_id' is invalid/);
  });

  it('posts to the notify webhook when members fail above the ratio or a run aborts, and not otherwise', async () => {
    const hook = await startWebhook('/services/T000/B000/secretpath');
    const { url, posts: received } = hook;
    try {
      await syncEveryone();
      await t.db.query(`UPDATE people SET score = score + 1 WHERE id <= 100`);
      sandbox.faults = ({ n }) => (n === 1 ? { itemErrors: Array.from({ length: 10 }, (_, i) => i) } : undefined);
      const failing = await cli(['sync', '--audiences', dir, '--notify-url', url, '--notify-failed-ratio', '0.001', '--json', '--max-change-ratio', '1'], { ...env, LOG_LEVEL: 'debug' });
      sandbox.faults = undefined;
      expect(failing.code).toBe(1);
      expect(received, failing.stderr.slice(-600)).toHaveLength(1);
      expect(received[0]).toMatchObject({ job: 'sync', text: expect.stringMatching(/10 of 3000 members failed \(people 10\)/) });
      expect(failing.stderr + failing.stdout).not.toContain('secretpath');

      const clean = await cli(['sync', '--audiences', dir, '--notify-url', url], env);
      expect(clean.code).toBe(0);
      expect(received).toHaveLength(1);

      await t.db.query(`UPDATE people SET score = score + 1 WHERE id <= 5`);
      const aborted = await cli(['sync', '--audiences', dir, '--notify-url', url], { ...env, BRAZE_API_KEY: 'wrong-key-123456' });
      expect(aborted.code).toBe(4);
      expect(received).toHaveLength(2);
      expect(received[1]!.text).toMatch(/people aborted: Braze answered 401/);
    } finally {
      await hook.stop();
    }
  });

  it('SIGTERM in the middle of an ingest: files in flight finish, the run is interrupted, exit 143; the next run loads the rest', async () => {
    const s3: TestS3 = await startS3();
    try {
      await s3.createBucket('term');
      for (let i = 0; i < 20; i++) {
        await s3.put('term', currentsKey('users.messages.email.Send', `2026-11-09-${String(i).padStart(2, '0')}`, `f${i}`), await encodeAvro(emailSendV1, emailSends(4000, i * 4000), 'deflate'));
      }
      const e = { DATABASE_URL: t.url, AWS_ENDPOINT_URL_S3: s3.endpoint, ...S3_ENV };
      const args = ['currents', 'ingest', '--source', 's3://term/currents', '--concurrency', '2', '--json'];
      const started = startCli(args, e);
      const { child, done } = started;
      const loaded = async () => (await t.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM braze_bridge.currents_files WHERE status = 'loaded' AND source = 's3://term'`)).rows[0]!.n;
      await waitFor(async () => (await loaded()) >= 2, 'the ingest has loaded 2 files', { cli: started, everyMs: 10 });
      child.kill('SIGTERM');
      const r = await done;
      expect(r.code).toBe(143);
      expect(JSON.parse(r.stdout).status).toBe('interrupted');
      const first = await loaded();
      expect(first).toBeLessThan(20);
      const rows = await t.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM braze_currents.users_messages_email_send`);
      expect(rows.rows[0]!.n).toBe(first * 4000); // whole files only
      const runs = await t.db.query(`SELECT status FROM braze_bridge.runs WHERE job = 'ingest' ORDER BY id`);
      expect(runs.rows.at(-1)).toEqual({ status: 'interrupted' });

      const again = await cli(args, e);
      expect(again.code).toBe(0);
      expect(JSON.parse(again.stdout).files).toMatchObject({ loaded: 20 - first, alreadyLoaded: first });
    } finally {
      await s3.stop();
    }
  });
});
