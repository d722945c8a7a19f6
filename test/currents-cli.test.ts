import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openAvroFile } from '../src/currents/avro/decode-avro.js';
import { tableName } from '../src/currents/parse-key.js';
import { createTestDatabase, type TestDatabase } from './helpers/database.js';
import { S3_ENV, startS3, type TestS3 } from './helpers/s3.js';
import { currentsKey, emailSendV1, emailSends, encodeAvro } from './helpers/avro.js';
import { cli, startCli } from './helpers/cli.js';

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

const eventCount = async (table = 'users_messages_email_send') =>
  (await t.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM braze_currents.${table}`)).rows[0]!.n;

describe('currents ingest as a process', () => {
  it('a missing bucket is one line and exit 2; refused credentials exit 4; nothing is recorded', async () => {
    const missing = await cli(['currents', 'ingest', '--source', 's3://no-such-bucket/currents'], env);
    expect(missing.code).toBe(2);
    expect(missing.stderr.trim().split('\n').at(-1)).toMatch(/^braze-bridge: listing s3:\/\/no-such-bucket\/currents: the bucket does not exist \(NoSuchBucket\)/);
    await s3.createBucket('locked');
    const denied = await cli(['currents', 'ingest', '--source', 's3://locked/currents'], { ...env, AWS_ACCESS_KEY_ID: 'WRONG', AWS_SECRET_ACCESS_KEY: 'WRONG' });
    expect(denied.code).toBe(4);
    expect(denied.stderr).toMatch(/access refused \((InvalidAccessKeyId|SignatureDoesNotMatch|AccessDenied)\)/);
    expect(denied.stderr).not.toContain('WRONG');
    const files = await t.db.query(`SELECT count(*)::int AS n FROM braze_bridge.currents_files`);
    expect(files.rows[0]).toEqual({ n: 0 });
  });

  it('kill -9 in the middle, then a re-run: every file loaded exactly once', async () => {
    await s3.createBucket('crash');
    for (let i = 0; i < 24; i++) {
      await s3.put('crash', currentsKey(SEND, `2026-11-06-${String(i).padStart(2, '0')}`, `f${i}`), await encodeAvro(emailSendV1, emailSends(4000, i * 4000), 'deflate'));
    }
    const args = ['currents', 'ingest', '--source', 's3://crash/currents', '--concurrency', '2', '--json'];
    const { child, done } = startCli(args, env);
    for (;;) {
      const { rows } = await t.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM braze_bridge.currents_files WHERE status = 'loaded' AND source = 's3://crash'`);
      if (rows[0]!.n >= 3) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    child.kill('SIGKILL');
    expect((await done).signal).toBe('SIGKILL');
    const loadedBefore = (await t.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM braze_bridge.currents_files WHERE status = 'loaded' AND source = 's3://crash'`)).rows[0]!.n;
    expect(loadedBefore).toBeLessThan(24);
    // Every file is either fully loaded or not at all.
    const partial = await t.db.query(
      `SELECT f.key, f.status, count(e.id)::int AS n FROM braze_bridge.currents_files f
         LEFT JOIN braze_currents.users_messages_email_send e ON e.source_key = f.key
        WHERE f.source = 's3://crash' GROUP BY 1, 2 HAVING (f.status = 'loaded') <> (count(e.id) = 4000)`,
    );
    expect(partial.rows).toEqual([]);

    const rerun = await cli(args, env);
    expect(rerun.code).toBe(0);
    const summary = JSON.parse(rerun.stdout);
    expect(summary.files).toMatchObject({ loaded: 24 - loadedBefore, alreadyLoaded: loadedBefore, failed: 0 });
    expect(summary.duplicates).toBe(0);
    expect(await eventCount()).toBe(24 * 4000);
    // The killed run is not left "running" forever: its run lock was free, so it is abandoned.
    const runs = await t.db.query(`SELECT status FROM braze_bridge.runs WHERE job = 'ingest' AND args->>'source' = 's3://crash' ORDER BY id`);
    expect(runs.rows).toEqual([{ status: 'abandoned' }, { status: 'succeeded' }]);
  });

  it('two processes at once split the files and load each exactly once', async () => {
    await s3.createBucket('shared');
    for (let i = 0; i < 16; i++) {
      await s3.put('shared', currentsKey(SEND, `2026-11-07-${String(i).padStart(2, '0')}`, `f${i}`), await encodeAvro(emailSendV1, emailSends(2000, 200_000 + i * 2000), 'snappy'));
    }
    const before = await eventCount();
    const args = ['currents', 'ingest', '--source', 's3://shared/currents', '--concurrency', '2', '--json'];
    const [a, b] = await Promise.all([cli(args, env), cli(args, env)]);
    expect([a.code, b.code]).toEqual([0, 0]);
    const sa = JSON.parse(a.stdout);
    const sb = JSON.parse(b.stdout);
    expect(sa.files.loaded + sb.files.loaded).toBe(16);
    expect(sa.duplicates + sb.duplicates).toBe(0);
    expect(await eventCount()).toBe(before + 16 * 2000);
    const status = await cli(['currents', 'status', '--source', 's3://shared/currents', '--json'], env);
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
    const r = await cli(['currents', 'ingest', '--source', 's3://samples/currents', '--json', '--concurrency', '1'], env);
    expect(r.code).toBe(0);
    const summary = JSON.parse(r.stdout);
    expect(summary.files).toMatchObject({ loaded: files, failed: 0 });
    expect(Object.keys(summary.perType)).toHaveLength(expected.size);
    for (const [eventType, record] of expected) {
      const { rows } = await t.db.query(`SELECT * FROM braze_currents.${tableName(eventType)} WHERE id = $1`, [record.id]);
      expect(rows, eventType).toHaveLength(1);
      for (const [field, value] of Object.entries(record)) {
        const stored = rows[0]![field];
        if (value === null || value === undefined) expect(stored, `${eventType}.${field}`).toBeNull();
        else if (typeof value === 'number' && Number.isInteger(value)) expect(Number(stored), `${eventType}.${field}`).toBe(value);
        else if (typeof value === 'number') expect(stored, `${eventType}.${field}`).toBeCloseTo(value, 5);
        else if (field === 'properties' && typeof value === 'string') expect(stored, `${eventType}.${field}`).toEqual(JSON.parse(value));
        else if (typeof value === 'string' || typeof value === 'boolean') expect(stored, `${eventType}.${field}`).toBe(value);
        else expect(stored, `${eventType}.${field}`).toEqual(JSON.parse(JSON.stringify(value)));
      }
      if (typeof record.time === 'number') expect(rows[0]!.occurred_at).toEqual(new Date(record.time * 1000));
    }
    // v5 email sends lack from_domain: the column exists (from v10) and the v5 row would be NULL.
    const columns = await t.db.query(`SELECT 1 FROM information_schema.columns WHERE table_schema = 'braze_currents' AND table_name = 'users_messages_email_send' AND column_name = 'from_domain'`);
    expect(columns.rows).toHaveLength(1);
  });
});
