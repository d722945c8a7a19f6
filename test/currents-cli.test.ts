import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer as createTcpServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openAvroFile } from '../src/currents/avro/decode-avro.js';
import { tableName } from '../src/currents/parse-key.js';
import { createTestDatabase, type TestDatabase } from './helpers/database.js';
import { S3_ENV, startS3, type TestS3 } from './helpers/s3.js';
import { currentsKey, emailSendV1, emailSends, encodeAvro } from './helpers/avro.js';
import { cli, startCli, waitFor } from './helpers/cli.js';
import { startWebhook } from './helpers/webhook.js';

let t: TestDatabase;
let s3: TestS3;
let env: Record<string, string>;
const SEND = 'users.messages.email.Send';
const SAMPLES = join(process.cwd(), '..', 'shared', 'currents-samples');

beforeAll(async () => {
  t = await createTestDatabase();
  s3 = await startS3();
  env = { DATABASE_URL: t.url, AWS_ENDPOINT_URL_S3: s3.endpoint, ...S3_ENV };
});
afterAll(async () => {
  await s3?.stop();
  await t?.drop();
});

/**
 * A test's own state schema (manifest, runs) and event schema, so that no test reads what
 * another left behind and each passes alone and in any order. The CLI migrates the state
 * schema on first use.
 */
const schemas = (name: string) => ['--state-schema', `bb_${name}`, '--target-schema', `ev_${name}`];

const eventCount = async (name: string, table = 'users_messages_email_send') =>
  (await t.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM ev_${name}.${table}`)).rows[0]!.n;

const loadedFiles = async (name: string) =>
  (await t.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM bb_${name}.currents_files WHERE status = 'loaded'`)).rows[0]!.n;

/** A loopback port nothing listens on: connections to it are refused at once. */
async function closedPort(): Promise<number> {
  const server = createTcpServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}


describe('currents ingest as a process', () => {
  it('a missing bucket is one line and exit 2; refused credentials exit 4; nothing is recorded', async () => {
    const missing = await cli(['currents', 'ingest', '--source', 's3://no-such-bucket/currents', ...schemas('refused')], env);
    expect(missing.code).toBe(2);
    expect(missing.stderr.trim().split('\n').at(-1)).toMatch(/^braze-bridge: listing s3:\/\/no-such-bucket\/currents: the bucket does not exist \(NoSuchBucket\)/);
    await s3.createBucket('locked');
    const denied = await cli(['currents', 'ingest', '--source', 's3://locked/currents', ...schemas('refused')], { ...env, AWS_ACCESS_KEY_ID: 'WRONG', AWS_SECRET_ACCESS_KEY: 'WRONG' });
    expect(denied.code).toBe(4);
    expect(denied.stderr).toMatch(/access refused \((InvalidAccessKeyId|SignatureDoesNotMatch|AccessDenied)\)/);
    expect(denied.stderr).not.toContain('WRONG');
    const files = await t.db.query(`SELECT count(*)::int AS n FROM bb_refused.currents_files`);
    expect(files.rows[0]).toEqual({ n: 0 });
    // The run history says how each ended: input to fix, or stopped.
    const runs = await t.db.query(`SELECT status FROM bb_refused.runs WHERE job = 'ingest' ORDER BY id`);
    expect(runs.rows).toEqual([{ status: 'failed' }, { status: 'aborted' }]);
  });

  it('an ingest that cannot reach S3 exits 4, still posts to --notify-url and rewrites --metrics-file', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'bb-currents-cli-'));
    const webhook = await startWebhook();
    try {
      const metricsFile = join(dir, 'braze-bridge.prom');
      const started = Date.now();
      const r = await cli(
        ['currents', 'ingest', '--source', 's3://unreachable/currents', '--s3-endpoint', `http://127.0.0.1:${await closedPort()}`, '--notify-url', webhook.url, '--metrics-file', metricsFile, ...schemas('unreachable')],
        env,
      );
      expect(r.code).toBe(4);
      expect(r.stderr.trim().split('\n').at(-1)).toMatch(/^braze-bridge: listing s3:\/\/unreachable\/currents: /);
      // The SDK retries a refused connection (5 attempts, backoff in fractions of a second).
      expect(Date.now() - started).toBeLessThan(20_000);
      expect(webhook.posts).toEqual([
        { job: 'ingest', text: expect.stringMatching(/^braze-bridge ingest failed: listing s3:\/\/unreachable\/currents: /), summary: expect.objectContaining({ status: 'aborted' }) },
      ]);
      const metrics = readFileSync(metricsFile, 'utf8');
      expect(metrics).toContain('braze_bridge_runs_total{job="ingest",audience="",outcome="aborted"} 1');
      expect(metrics).toContain('# TYPE braze_bridge_currents_files gauge');
    } finally {
      await webhook.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('kill -9 in the middle, then a re-run: every file loaded exactly once', async () => {
    await s3.createBucket('crash');
    for (let i = 0; i < 24; i++) {
      await s3.put('crash', currentsKey(SEND, `2026-11-06-${String(i).padStart(2, '0')}`, `f${i}`), await encodeAvro(emailSendV1, emailSends(4000, i * 4000), 'deflate'));
    }
    const args = ['currents', 'ingest', '--source', 's3://crash/currents', '--concurrency', '2', '--json', ...schemas('crash')];
    const { child, done } = startCli(args, env);
    // Until the CLI has migrated the state schema, the table is not there yet.
    await waitFor(async () => (await loadedFiles('crash').catch(() => 0)) >= 3, 'three files are loaded', { cli: { child, done }, everyMs: 20 });
    child.kill('SIGKILL');
    expect((await done).signal).toBe('SIGKILL');
    const loadedBefore = await loadedFiles('crash');
    expect(loadedBefore).toBeLessThan(24);
    // Every file is either fully loaded or not at all.
    const partial = await t.db.query(
      `SELECT f.key, f.status, count(e.id)::int AS n FROM bb_crash.currents_files f
         LEFT JOIN ev_crash.users_messages_email_send e ON e.source_key = f.key
        GROUP BY 1, 2 HAVING (f.status = 'loaded') <> (count(e.id) = 4000)`,
    );
    expect(partial.rows).toEqual([]);

    const rerun = await cli(args, env);
    expect(rerun.code).toBe(0);
    const summary = JSON.parse(rerun.stdout);
    expect(summary.files).toMatchObject({ loaded: 24 - loadedBefore, alreadyLoaded: loadedBefore, failed: 0 });
    expect(summary.duplicates).toBe(0);
    expect(await eventCount('crash')).toBe(24 * 4000);
    // The killed run is not left "running" forever: its run lock was free, so it is abandoned.
    const runs = await t.db.query(`SELECT status FROM bb_crash.runs WHERE job = 'ingest' ORDER BY id`);
    expect(runs.rows).toEqual([{ status: 'abandoned' }, { status: 'succeeded' }]);
  });

  it('kill -9 in the middle of files that repeat events, then a re-run: each event id once, and the manifest accounts for every record', async () => {
    await s3.createBucket('crash-repeats');
    let records = 0;
    for (let i = 0; i < 16; i++) {
      // 4,000 new events, 200 repeated within the file and 200 of the file before.
      const own = emailSends(4000, i * 4000);
      const file = [...own, ...own.slice(0, 200), ...(i > 0 ? emailSends(200, (i - 1) * 4000 + 1000) : [])];
      records += file.length;
      await s3.put('crash-repeats', currentsKey(SEND, `2026-11-09-${String(i).padStart(2, '0')}`, `f${i}`), await encodeAvro(emailSendV1, file, 'deflate'));
    }
    const args = ['currents', 'ingest', '--source', 's3://crash-repeats/currents', '--concurrency', '2', '--json', ...schemas('crashrep')];
    const { child, done } = startCli(args, env);
    await waitFor(async () => (await loadedFiles('crashrep').catch(() => 0)) >= 3, 'three files are loaded', { cli: { child, done }, everyMs: 20 });
    child.kill('SIGKILL');
    expect((await done).signal).toBe('SIGKILL');
    expect(await loadedFiles('crashrep')).toBeLessThan(16);

    const rerun = await cli(args, env);
    expect(rerun.code, rerun.stderr).toBe(0);
    expect(await eventCount('crashrep')).toBe(16 * 4000);
    const ids = await t.db.query(`SELECT count(DISTINCT id)::int AS n FROM ev_crashrep.users_messages_email_send`);
    expect(ids.rows[0]).toEqual({ n: 16 * 4000 });
    // What the two runs recorded adds up: every record either loaded or counted as a duplicate, once.
    const manifest = await t.db.query(`SELECT count(*)::int AS files, sum(records)::int AS records, sum(rows_loaded)::int AS loaded, sum(duplicates)::int AS duplicates FROM bb_crashrep.currents_files WHERE status = 'loaded'`);
    expect(manifest.rows[0]).toEqual({ files: 16, records, loaded: 16 * 4000, duplicates: records - 16 * 4000 });
  });

  it('two processes at once split the files and load each exactly once', async () => {
    await s3.createBucket('shared');
    for (let i = 0; i < 16; i++) {
      await s3.put('shared', currentsKey(SEND, `2026-11-07-${String(i).padStart(2, '0')}`, `f${i}`), await encodeAvro(emailSendV1, emailSends(2000, 200_000 + i * 2000), 'snappy'));
    }
    const args = ['currents', 'ingest', '--source', 's3://shared/currents', '--concurrency', '2', '--json', ...schemas('shared')];
    const [a, b] = await Promise.all([cli(args, env), cli(args, env)]);
    expect([a.code, b.code], `${a.stderr}\n${b.stderr}`).toEqual([0, 0]);
    const sa = JSON.parse(a.stdout);
    const sb = JSON.parse(b.stdout);
    expect(sa.files.loaded + sb.files.loaded).toBe(16);
    expect(sa.duplicates + sb.duplicates).toBe(0);
    expect(await eventCount('shared')).toBe(16 * 2000);
    const status = await cli(['currents', 'status', '--source', 's3://shared/currents', '--json', ...schemas('shared')], env);
    expect(JSON.parse(status.stdout).eventTypes).toEqual([expect.objectContaining({ eventType: SEND, filesLoaded: 16, rows: 32_000, failed: 0 })]);
  });

  it.skipIf(!existsSync(SAMPLES))("ingests Braze's real sample files of schema v5, v8 and v10 and keeps their values", async () => {
    await s3.createBucket('samples');
    const expected = new Map<string, Record<string, unknown>>();
    let files = 0;
    // One hour per version, so that (one file at a time, oldest hour first) v5 loads first.
    for (const [hour, version] of ['v5', 'v8', 'v10'].entries()) {
      for (const file of readdirSync(join(SAMPLES, version)).filter((f) => f.endsWith('.avro'))) {
        const eventType = file.replace(/\.avro$/, '');
        const bytes = readFileSync(join(SAMPLES, version, file));
        await s3.put('samples', currentsKey(eventType, `2026-11-08-0${hour}`, `${version}-0+0+0`), bytes);
        files++;
        // The first copy of an event id wins; remember the first record seen per type.
        if (!expected.has(eventType)) {
          const avro = await openAvroFile(Readable.from([bytes]));
          for await (const record of avro.records()) {
            expected.set(eventType, record);
            break;
          }
        }
      }
    }
    const r = await cli(['currents', 'ingest', '--source', 's3://samples/currents', '--json', '--concurrency', '1', ...schemas('samples')], env);
    expect(r.code).toBe(0);
    const summary = JSON.parse(r.stdout);
    expect(summary.files).toMatchObject({ loaded: files, failed: 0 });
    expect(Object.keys(summary.perType)).toHaveLength(expected.size);
    for (const [eventType, record] of expected) {
      const { rows } = await t.db.query(`SELECT * FROM ev_samples.${tableName(eventType)} WHERE id = $1`, [record.id]);
      expect(rows, eventType).toHaveLength(1);
      for (const [field, value] of Object.entries(record)) {
        const stored = rows[0]![field];
        if (value === null || value === undefined) expect(stored, `${eventType}.${field}`).toBeNull();
        else if (typeof value === 'bigint') expect(String(stored), `${eventType}.${field}`).toBe(String(value));
        else if (typeof value === 'number' && Number.isInteger(value)) expect(Number(stored), `${eventType}.${field}`).toBe(value);
        else if (typeof value === 'number') expect(stored, `${eventType}.${field}`).toBeCloseTo(value, 5);
        else if (field === 'properties' && typeof value === 'string') expect(stored, `${eventType}.${field}`).toEqual(JSON.parse(value));
        else if (typeof value === 'string' || typeof value === 'boolean') expect(stored, `${eventType}.${field}`).toBe(value);
        else expect(stored, `${eventType}.${field}`).toEqual(JSON.parse(JSON.stringify(value, (_k, x) => (typeof x === 'bigint' ? Number(x) : x))));
      }
      if (typeof record.time === 'number' || typeof record.time === 'bigint') expect(rows[0]!.occurred_at).toEqual(new Date(Number(record.time) * 1000));
    }
    // v5 email sends lack from_domain: the column exists (from v10) and the v5 row would be NULL.
    const columns = await t.db.query(`SELECT 1 FROM information_schema.columns WHERE table_schema = 'ev_samples' AND table_name = 'users_messages_email_send' AND column_name = 'from_domain'`);
    expect(columns.rows).toHaveLength(1);
  }, 180_000); // 273 files through S3 and the CLI: slow on a busy 2-core machine
});
