import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ingest, type IngestOptions } from '../src/currents/ingest.js';
import { openSource } from '../src/currents/source/open-source.js';
import { currentsStatus } from '../src/currents/status.js';
import { registerFiles } from '../src/currents/manifest.js';
import { silentLogger } from '../src/log.js';
import { createDatabase } from '../src/db/pool.js';
import { createTestDatabase, type TestDatabase } from './helpers/database.js';
import { startS3, type TestS3 } from './helpers/s3.js';
import { currentsKey, customEvent, emailSends, emailSendV1, emailSendV2, encodeAvro, purchase, writeObject } from './helpers/avro.js';

let t: TestDatabase;
let s3: TestS3;
const SEND = 'users.messages.email.Send';

// Each test has its own bucket (the manifest keys files by source) and its own target schema
// (event tables and their columns), so that any test passes alone and in any order.
const run = (bucket: string, targetSchema: string, extra: Partial<IngestOptions> = {}) =>
  ingest(t.db, silentLogger, {
    source: openSource(`s3://${bucket}/currents`, { endpoint: s3.endpoint }),
    stateSchema: 'braze_bridge',
    targetSchema,
    concurrency: 3,
    ...extra,
  });

/**
 * Whether each of `n` connections of the pool, held at once (its idle ones are handed out
 * first), has synchronous_commit as a new session would: the loaders turn it off for their
 * files' transactions only.
 */
async function poolHasDefaultCommit(n: number): Promise<boolean[]> {
  let held = 0;
  let all!: () => void;
  const together = new Promise<void>((resolve) => (all = resolve));
  return Promise.all(
    Array.from({ length: n }, () =>
      t.db.withConnection(async (c) => {
        const { rows } = await c.query<{ same: boolean }>(`SELECT current_setting('synchronous_commit') = reset_val AS same FROM pg_settings WHERE name = 'synchronous_commit'`);
        if (++held === n) all();
        await together;
        return rows[0]!.same;
      }),
    ),
  );
}

beforeAll(async () => {
  t = await createTestDatabase();
  s3 = await startS3();
});
afterAll(async () => {
  await s3?.stop();
  await t?.drop();
});

describe('Currents ingestion from S3', () => {
  it('loads every codec, maps fields by name, keeps properties queryable, and dedupes by event id', async () => {
    const ev = 'ev_codecs';
    await s3.createBucket('main');
    await s3.put('main', currentsKey(SEND, '2026-11-01-10', '0+0+0'), await encodeAvro(emailSendV1, emailSends(500, 0), 'null'));
    await s3.put('main', currentsKey(SEND, '2026-11-01-11', '0+0+500'), await encodeAvro(emailSendV1, emailSends(500, 500), 'deflate'));
    // v2 adds from_domain in the middle; 100 of its events repeat ids from the hour-11 file.
    const v2Key = currentsKey(SEND, '2026-11-01-12', '0+0+1000');
    await s3.put('main', v2Key, await encodeAvro(emailSendV2, emailSends(400, 900, { from_domain: 'mail.example.com' }), 'snappy'));
    await s3.put(
      'main',
      currentsKey('users.behaviors.CustomEvent', '2026-11-01-12', '0+0+0'),
      await encodeAvro(customEvent, [
        { id: 'ce1', user_id: 'u1', external_user_id: 'e1', time: 1_780_000_000, name: 'Product Viewed', properties: '{"sku": "A-1", "price": 9.5}', ad_tracking_enabled: true, tags: ['a', 'b'] },
        { id: 'ce2', user_id: 'u2', external_user_id: null, time: 1_780_000_001, name: 'Odd', properties: 'not json {', ad_tracking_enabled: null, tags: null },
      ], 'deflate'),
    );
    await s3.put('main', currentsKey('users.behaviors.Purchase', '2026-11-01-12', '0+0+0'), await encodeAvro(purchase, [{ id: 'p1', user_id: 'u1', time: 1_780_000_002, product_id: 'sku-1', price: 19.99, currency: 'EUR', properties: '{}' }]));
    await s3.put('main', 'currents/README.txt', 'not a data file');

    const summary = await run('main', ev);
    expect(summary).toMatchObject({
      status: 'succeeded',
      exitCode: 0,
      discovered: { listed: 6, currents: 5, ignored: 1, new: 5 },
      files: { loaded: 5, failed: 0, leftPending: 0 },
      rows: 1300 + 2 + 1,
      duplicates: 100,
    });
    expect(summary.perType[SEND]).toEqual({ files: 3, rows: 1300, duplicates: 100, failed: 0 });

    const send = await t.db.query(`SELECT * FROM ${ev}.users_messages_email_send WHERE id IN ('send-1', 'send-1250') ORDER BY id`);
    expect(send.rows[0]).toMatchObject({
      id: 'send-1',
      external_user_id: 'ext-1',
      time: '1780000001',
      occurred_at: new Date(1_780_000_001_000),
      campaign_name: 'Winter\tsale\nwith "quotes" and \\ backslash',
      from_domain: null,
      source_key: currentsKey(SEND, '2026-11-01-10', '0+0+0'),
    });
    expect(send.rows[1]).toMatchObject({ id: 'send-1250', from_domain: 'mail.example.com' });
    // One row per event id. Three workers may load the hour-11 file and the v2 file at once, so
    // either may win the 100 repeated ids (first-copy-wins in hour order has its own test);
    // whichever wins, all 100 come whole from that one file, none from both.
    const rows = await t.db.query(
      `SELECT count(*)::int AS n, count(DISTINCT id)::int AS ids, bool_and((from_domain IS NULL) = (source_key <> $1)) AS whole_copies
         FROM ${ev}.users_messages_email_send`,
      [v2Key],
    );
    expect(rows.rows[0]).toEqual({ n: 1300, ids: 1300, whole_copies: true });
    const repeated = await t.db.query(
      `SELECT count(*)::int AS n, count(DISTINCT source_key)::int AS files FROM ${ev}.users_messages_email_send WHERE id = ANY($1)`,
      [Array.from({ length: 100 }, (_, i) => `send-${900 + i}`)],
    );
    expect(repeated.rows[0]).toEqual({ n: 100, files: 1 });

    const ce = await t.db.query(`SELECT id, properties, properties->>'sku' AS sku, ad_tracking_enabled, tags FROM ${ev}.users_behaviors_customevent ORDER BY id`);
    expect(ce.rows).toEqual([
      { id: 'ce1', properties: { sku: 'A-1', price: 9.5 }, sku: 'A-1', ad_tracking_enabled: true, tags: ['a', 'b'] },
      { id: 'ce2', properties: 'not json {', sku: null, ad_tracking_enabled: null, tags: null },
    ]);
    const p = await t.db.query(`SELECT price, pg_typeof(price)::text AS type FROM ${ev}.users_behaviors_purchase`);
    // An Avro float is stored as the shortest decimal that reads back as the same float: 19.99, not 19.989999771118164.
    expect(p.rows[0]).toEqual({ price: 19.99, type: 'double precision' });
    const columns = await t.db.query(`SELECT column_name FROM information_schema.columns WHERE table_schema = $1 AND table_name = 'users_messages_email_send' ORDER BY ordinal_position`, [ev]);
    expect(columns.rows.map((r) => r.column_name)).toContain('from_domain');

    // A second run finds nothing new: files are known by key and ETag.
    const again = await run('main', ev);
    expect(again).toMatchObject({ discovered: { new: 0 }, files: { loaded: 0, alreadyLoaded: 5 }, rows: 0 });
  });

  it('keeps the first copy of a repeated event id when files load one at a time, oldest hour first', async () => {
    const ev = 'ev_first_copy';
    await s3.createBucket('first-copy');
    const hour11 = currentsKey(SEND, '2026-11-01-11', '0+0+500');
    await s3.put('first-copy', hour11, await encodeAvro(emailSendV1, emailSends(500, 500), 'deflate'));
    // Claimed after the hour-11 file (ORDER BY hour), and with one worker loaded after it too.
    await s3.put('first-copy', currentsKey(SEND, '2026-11-01-12', '0+0+1000'), await encodeAvro(emailSendV2, emailSends(400, 900, { from_domain: 'mail.example.com' }), 'snappy'));

    const summary = await run('first-copy', ev, { concurrency: 1 });
    expect(summary).toMatchObject({ status: 'succeeded', files: { loaded: 2 }, rows: 800, duplicates: 100 });
    const repeated = await t.db.query(
      `SELECT count(*)::int AS n, count(*) FILTER (WHERE from_domain IS NULL AND source_key = $2)::int AS first FROM ${ev}.users_messages_email_send WHERE id = ANY($1)`,
      [Array.from({ length: 100 }, (_, i) => `send-${900 + i}`), hour11],
    );
    // The repeated ids kept the first copy (hour 11, from_domain NULL), not the v2 one.
    expect(repeated.rows[0]).toEqual({ n: 100, first: 100 });
    const files = await t.db.query(`SELECT hour, rows_loaded::int, duplicates::int FROM braze_bridge.currents_files WHERE source = 's3://first-copy' ORDER BY hour`);
    expect(files.rows.map((r) => [r.rows_loaded, r.duplicates])).toEqual([[500, 0], [300, 100]]);
  });

  it('fails a truncated, corrupt or oddly encoded file with its key and record index; the others load', async () => {
    const ev = 'ev_bad';
    await s3.createBucket('bad');
    const good = await encodeAvro(emailSendV1, emailSends(300, 10_000), 'deflate', 2048);
    await s3.put('bad', currentsKey(SEND, '2026-11-02-00', 'good'), good);
    // Cut inside a block. (A file cut exactly at a block boundary cannot be told from a whole
    // one: the container format records no total.)
    await s3.put('bad', currentsKey(SEND, '2026-11-02-01', 'truncated'), good.subarray(0, Math.floor(good.length * 0.61)));
    const bzip = (await encodeAvro(emailSendV1, emailSends(5, 20_000))).toString('latin1').replace('\u0008null', '\u000abzip2');
    await s3.put('bad', currentsKey(SEND, '2026-11-02-02', 'bzip2'), Buffer.from(bzip, 'latin1'));
    const flipped = Buffer.from(await encodeAvro(emailSendV1, emailSends(50, 30_000), 'snappy'));
    flipped[flipped.length - 40] = flipped[flipped.length - 40]! ^ 0xff; // inside the last block: the CRC no longer matches
    await s3.put('bad', currentsKey(SEND, '2026-11-02-03', 'flipped'), flipped);
    await s3.put('bad', currentsKey(SEND, '2026-11-02-04', 'garbage'), 'this is not avro');
    // A field whose type changed incompatibly: time as a string.
    const retyped = { ...emailSendV1, fields: emailSendV1.fields.map((f) => (f.name === 'time' ? { name: 'time', type: 'string' } : f)) };
    await s3.put('bad', currentsKey(SEND, '2026-11-02-05', 'retyped'), await encodeAvro(retyped, emailSends(3, 40_000, { time: 'yesterday' })));

    // One worker, so the good file (oldest hour) creates the table with time bigint before the
    // retyped file is read; with several, the retyped file could create it with time text.
    const summary = await run('bad', ev, { concurrency: 1 });
    expect(summary.status).toBe('partial');
    expect(summary.exitCode).toBe(1);
    expect(summary.files).toMatchObject({ loaded: 1, failed: 5, leftPending: 0 });
    const byName = Object.fromEntries(summary.failures.map((f) => [f.key.replace(/^.*\//, ''), f]));
    expect(byName['truncated.avro']!.error).toMatch(/truncated file/);
    expect(byName['truncated.avro']!.recordIndex).toBeGreaterThan(0);
    expect(byName['bzip2.avro']!.error).toMatch(/unsupported codec "bzip2"/);
    expect(byName['flipped.avro']!.error).toMatch(/snappy block cannot be decompressed|corrupt/);
    expect(byName['garbage.avro']!.error).toMatch(/not an Avro object container file/);
    expect(byName['retyped.avro']!.error).toMatch(/field "time" is text in this file but bigint in table ev_bad.users_messages_email_send/);
    // Nothing of a failed file was loaded.
    const n = await t.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${ev}.users_messages_email_send`);
    expect(n.rows[0]!.n).toBe(300);

    const second = await run('bad', ev);
    expect(second.files).toMatchObject({ loaded: 0, failed: 0 });
    expect(second.status).toBe('succeeded');
    const retried = await run('bad', ev, { retryFailed: true });
    expect(retried.files.failed).toBe(5);

    const status = await currentsStatus(t.db, 'braze_bridge', 's3://bad');
    expect(status.eventTypes).toEqual([expect.objectContaining({ eventType: SEND, filesLoaded: 1, failed: 5, rows: 300 })]);
    expect(status.failures.map((f) => f.key.replace(/^.*\//, ''))).toEqual(['truncated.avro', 'bzip2.avro', 'flipped.avro', 'garbage.avro', 'retyped.avro']);
    expect(status.failures.every((f) => f.attempts === 2)).toBe(true);
  });

  it("registers a listing without waiting for a file another session is loading, and leaves that file's row as it was", async () => {
    const source = 'file:///listing-locks';
    const file = (name: string) => ({ key: `currents/event_type=${SEND}/date=2026-11-06-00/${name}.avro`, etag: `e-${name}`, size: 1, eventType: SEND, hour: new Date('2026-11-06T00:00:00Z') });
    expect(await registerFiles(t.db, 'braze_bridge', source, [file('held')])).toBe(1);
    // Another session's claim holds the row, as a worker loading the file does.
    await t.db.withConnection(async (holder) => {
      await holder.query('BEGIN');
      try {
        await holder.query(`SELECT 1 FROM braze_bridge.currents_files WHERE source = $1 FOR UPDATE`, [source]);
        const before = (await t.db.query(`SELECT listed_at FROM braze_bridge.currents_files WHERE source = $1`, [source])).rows[0]!.listed_at;
        const listed = registerFiles(t.db, 'braze_bridge', source, [file('held'), file('new')]);
        const waited = new Promise((resolve) => setTimeout(() => resolve('waited'), 3000));
        expect(await Promise.race([listed, waited])).toBe(1);
        const rows = await t.db.query<{ key: string; listed_at: Date }>(`SELECT key, listed_at FROM braze_bridge.currents_files WHERE source = $1 ORDER BY key`, [source]);
        expect(rows.rows.map((r) => r.key.replace(/^.*\//, ''))).toEqual(['held.avro', 'new.avro']);
        expect(rows.rows[0]!.listed_at).toEqual(before);
      } finally {
        await holder.query('ROLLBACK');
      }
    });
  });

  it("commits a file's transaction without waiting for its WAL where synchronous_commit is the default, keeps another level, leaves the pool as it was", async () => {
    const ev = 'ev_commit';
    await s3.createBucket('commit');
    const put = async (name: string, from: number) => s3.put('commit', currentsKey(SEND, `2026-11-05-0${from}`, name), await encodeAvro(emailSendV1, emailSends(5, 80_000 + 10 * from)));
    await put('a', 0);
    await run('commit', ev); // the state schema exists from here
    // What each file's transaction runs with, noted as the file is marked loaded in it.
    await t.db.query(`CREATE TABLE commit_seen (level text);
      CREATE FUNCTION note_commit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO commit_seen VALUES (current_setting('synchronous_commit')); RETURN NEW; END $$;
      CREATE TRIGGER note_commit AFTER UPDATE ON braze_bridge.currents_files FOR EACH ROW WHEN (NEW.status = 'loaded') EXECUTE FUNCTION note_commit()`);
    await put('b', 1);
    await put('c', 2);
    expect(await run('commit', ev)).toMatchObject({ files: { loaded: 2, failed: 0 } });
    expect((await t.db.query('SELECT level FROM commit_seen')).rows).toEqual([{ level: 'off' }, { level: 'off' }]);
    // Only inside the file's transaction: every connection the pool hands out is as it was.
    expect(await poolHasDefaultCommit(8)).toEqual(Array(8).fill(true));

    // A database (or server, or role) set to another level keeps it.
    await t.db.query(`ALTER DATABASE ${t.name} SET synchronous_commit = 'local'`);
    const local = createDatabase({ connectionString: t.url, max: 4 });
    try {
      await put('d', 3);
      const summary = await ingest(local, silentLogger, { source: openSource('s3://commit/currents', { endpoint: s3.endpoint }), stateSchema: 'braze_bridge', targetSchema: ev, concurrency: 2 });
      expect(summary).toMatchObject({ files: { loaded: 1, failed: 0 } });
      expect((await t.db.query(`SELECT level FROM commit_seen WHERE level <> 'off'`)).rows).toEqual([{ level: 'local' }]);
    } finally {
      await local.end();
      await t.db.query(`ALTER DATABASE ${t.name} RESET synchronous_commit`);
    }
  });

  it('lists past the first 1,000 keys, and --event-types / --since / --until choose files by key', async () => {
    const ev = 'ev_many';
    await s3.createBucket('many');
    const tiny = await encodeAvro(emailSendV1, emailSends(1, 50_000));
    for (let i = 0; i < 1030; i += 10) {
      await Promise.all(Array.from({ length: 10 }, (_, j) => s3.put('many', `currents/other/file-${String(i + j).padStart(4, '0')}.json`, '{}')));
    }
    await s3.put('many', currentsKey(SEND, '2026-10-31-23', 'early'), tiny);
    await s3.put('many', currentsKey(SEND, '2026-11-01-05', 'inside'), await encodeAvro(emailSendV1, emailSends(1, 50_001)));
    await s3.put('many', currentsKey('users.behaviors.CustomEvent', '2026-11-01-05', 'other-type'), await encodeAvro(customEvent, [{ id: 'x', user_id: 'u', time: 1, name: 'n', properties: '{}' }]));
    await s3.put('many', currentsKey(SEND, '2026-11-03-00', 'late'), await encodeAvro(emailSendV1, emailSends(1, 50_002)));

    const summary = await run('many', ev, { eventTypes: [SEND], since: new Date('2026-11-01T00:00:00Z'), until: new Date('2026-11-02T23:00:00Z') });
    expect(summary.discovered).toEqual({ listed: 1034, currents: 4, ignored: 1030, refused: 0, new: 1 });
    expect(summary.files.loaded).toBe(1);
    const keys = await t.db.query<{ key: string }>(`SELECT key FROM braze_bridge.currents_files WHERE source = 's3://many'`);
    expect(keys.rows.map((r) => r.key.replace(/^.*\//, ''))).toEqual(['inside.avro']);
  });

  it('reads a local copy of the bucket through file:// the same way', async () => {
    const ev = 'ev_local';
    const dir = mkdtempSync(join(tmpdir(), 'bb-currents-'));
    try {
      const key = currentsKey(SEND, '2026-11-04-07', 'local');
      writeObject(dir, key, await encodeAvro(emailSendV1, emailSends(10, 70_000), 'snappy'));
      writeFileSync(join(dir, 'currents', 'notes.txt'), 'ignored');
      const local = (source = openSource(`file://${dir}`)) => ingest(t.db, silentLogger, { source, stateSchema: 'braze_bridge', targetSchema: ev, concurrency: 1 });
      const summary = await local();
      expect(summary).toMatchObject({ source: `file://${dir}`, discovered: { listed: 2, currents: 1, ignored: 1 }, files: { loaded: 1 }, rows: 10 });
      const again = await local();
      expect(again.files).toMatchObject({ loaded: 0, alreadyLoaded: 1 });

      // Listed, then deleted before it was read: failed for good, not pending forever.
      const gone = currentsKey(SEND, '2026-11-04-08', 'gone');
      writeObject(dir, gone, await encodeAvro(emailSendV1, emailSends(1, 71_000)));
      const source = openSource(`file://${dir}`);
      const deleting = { name: source.name, prefix: source.prefix, location: source.location, list: source.list.bind(source), open: async (k: string) => {
        if (k === gone) rmSync(join(dir, gone));
        return source.open(k);
      } };
      const third = await local(deleting);
      expect(third.files).toMatchObject({ loaded: 0, failed: 1, leftPending: 0 });
      expect(third.failures[0]!.error).toMatch(/the file no longer exists/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('flags hours with no file between the oldest and newest hour loaded', async () => {
    await s3.createBucket('gaps');
    for (const hour of ['2026-11-05-00', '2026-11-05-01', '2026-11-05-04']) {
      await s3.put('gaps', currentsKey(SEND, hour, hour), await encodeAvro(emailSendV1, emailSends(1, Number(hour.slice(-2)) + 60_000)));
    }
    await run('gaps', 'ev_gaps');
    const status = await currentsStatus(t.db, 'braze_bridge', 's3://gaps');
    expect(status).toMatchObject({ oldestHour: '2026-11-05-00', newestHour: '2026-11-05-04', missingHours: ['2026-11-05-02', '2026-11-05-03'] });
  });
});
