/**
 * Currents under hostile input, through the CLI against real PostgreSQL and the S3 protocol:
 * each odd file fails (or loads) alone, the ordinary files around it load, the next run is not
 * blocked, and values arrive exactly. Each test has its own bucket and schemas.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from './helpers/database.js';
import { S3_ENV, startS3, type TestS3 } from './helpers/s3.js';
import { currentsKey, emailSendV1, emailSends, encodeAvro, purchase } from './helpers/avro.js';
import { cli } from './helpers/cli.js';
import { startWebhook } from './helpers/webhook.js';

let t: TestDatabase;
let s3: TestS3;
let env: Record<string, string>;
const SEND = 'users.messages.email.Send';

beforeAll(async () => {
  t = await createTestDatabase();
  s3 = await startS3();
  env = { DATABASE_URL: t.url, AWS_ENDPOINT_URL_S3: s3.endpoint, ...S3_ENV };
});
afterAll(async () => {
  await s3?.stop();
  await t?.drop();
});

const schemas = (name: string) => ['--state-schema', `bb_${name}`, '--target-schema', `ev_${name}`];
const ingest = (bucket: string, name: string, ...more: string[]) => cli(['currents', 'ingest', '--source', `s3://${bucket}/currents`, '--json', ...schemas(name), ...more], env);
const rows = async (sql: string, values: unknown[] = []) => (await t.db.query(sql, values)).rows;

/** A record schema with only an id, a user and the given extra fields. */
const recordOf = (name: string, fields: object[]) => ({ type: 'record', name, fields: [{ name: 'id', type: 'string' }, { name: 'user_id', type: 'string' }, { name: 'time', type: 'int' }, ...fields] });

describe('currents ingest under hostile input', () => {
  it('each odd file loads or fails alone, the ordinary files around it load, and the next run is not blocked', async () => {
    const bucket = 'odd';
    await s3.createBucket(bucket);
    const put = async (type: string, hour: string, name: string, bytes: Buffer) => s3.put(bucket, currentsKey(type, hour, name), bytes);
    const longA = `users.behaviors.${'a'.repeat(40)}.VeryLongCustomEventNameNumberOne`;
    const longB = `users.behaviors.${'a'.repeat(40)}.VeryLongCustomEventNameNumberTwo`;
    const simple = recordOf('Simple', [{ name: 'note', type: 'string' }]);
    await put(SEND, '2026-11-01-00', 'first', await encodeAvro(emailSendV1, emailSends(3, 0)));
    // Table names over 63 bytes, sharing their first 50 characters.
    await put(longA, '2026-11-01-01', 'a', await encodeAvro(simple, [{ id: 'la', user_id: 'u', time: 1, note: 'A' }]));
    await put(longB, '2026-11-01-01', 'b', await encodeAvro(simple, [{ id: 'lb', user_id: 'u', time: 1, note: 'B' }]));
    // Types equal after normalisation.
    await put('users.behaviors.Foo', '2026-11-01-02', 'foo1', await encodeAvro(simple, [{ id: 'f1', user_id: 'u', time: 1, note: 'dot' }]));
    await put('users_behaviors.foo', '2026-11-01-02', 'foo2', await encodeAvro(simple, [{ id: 'f2', user_id: 'u', time: 1, note: 'underscore' }]));
    // More fields than PostgreSQL's 1,600 columns.
    const wide = recordOf('Wide', Array.from({ length: 1700 }, (_, i) => ({ name: `f${i}`, type: 'int' })));
    const wideRecord = Object.fromEntries([['id', 'w1'], ['user_id', 'u'], ['time', 1], ...Array.from({ length: 1700 }, (_, i) => [`f${i}`, i])]);
    await put('users.behaviors.Wide', '2026-11-01-03', 'wide', await encodeAvro(wide, [wideRecord]));
    // A 9 kB id of random characters, and fields named like braze-bridge's own columns.
    const longId = Array.from({ length: 9000 }, (_, i) => String.fromCharCode(33 + ((i * 7919) % 90))).join('');
    const clash = recordOf('Clash', [{ name: 'Source_Key', type: 'string' }, { name: 'source_key', type: 'string' }]);
    await put('users.behaviors.Clash', '2026-11-01-04', 'clash', await encodeAvro(clash, [{ id: longId, user_id: 'u', time: 1, Source_Key: 'mixed', source_key: 'lower' }]));
    // A corrupt file of a type seen nowhere else: it fails, and leaves no empty table.
    const corrupt = await encodeAvro(simple, [{ id: 'c1', user_id: 'u', time: 1, note: 'x' }]);
    await put('users.behaviors.Broken', '2026-11-01-05', 'broken', corrupt.subarray(0, corrupt.length - 20));
    await put(SEND, '2026-11-01-06', 'last', await encodeAvro(emailSendV1, emailSends(2, 100)));

    const first = await ingest(bucket, 'odd', '--concurrency', '2');

    expect(first.code, first.stderr).toBe(1);
    const summary = JSON.parse(first.stdout);
    expect(summary.files).toMatchObject({ loaded: 8, failed: 1, leftPending: 0 });
    expect(summary.failures).toEqual([expect.objectContaining({ key: expect.stringContaining('users.behaviors.Broken') })]);
    expect((await rows(`SELECT count(*)::int AS n FROM ev_odd.users_messages_email_send`))[0]).toEqual({ n: 5 });

    const status = JSON.parse((await cli(['currents', 'status', '--json', ...schemas('odd')], env)).stdout);
    const renamed = new Map<string, string>(status.renamedTables.map((r: { eventType: string; table: string }) => [r.eventType, r.table]));
    expect(renamed.get(longA)).toMatch(/^[a-z_]{50}_[0-9a-f]{12}$/);
    expect(renamed.get(longB)).toMatch(/^[a-z_]{50}_[0-9a-f]{12}$/);
    expect(renamed.get(longA)).not.toBe(renamed.get(longB));
    expect(await rows(`SELECT id, note FROM ev_odd.${renamed.get(longB)}`)).toEqual([{ id: 'lb', note: 'B' }]);
    // One of the colliding types keeps the plain name, the other gets its own table.
    const fooTable = renamed.get('users.behaviors.Foo') ?? renamed.get('users_behaviors.foo');
    expect(await rows(`SELECT note FROM ev_odd.users_behaviors_foo UNION ALL SELECT note FROM ev_odd.${fooTable} ORDER BY 1`)).toEqual([{ note: 'dot' }, { note: 'underscore' }]);
    // Fields past the column limit are in extra_fields.
    const w = (await rows(`SELECT f0, extra_fields FROM ev_odd.users_behaviors_wide`))[0]!;
    expect(w.f0).toBe('0');
    expect(w.extra_fields).toMatchObject({ f1699: 1699 });
    expect(Object.keys(w).length + Object.keys(w.extra_fields as object).length).toBeGreaterThan(100);
    // The long id loaded; Source_Key is a column, source_key (ours) went to extra_fields.
    expect(await rows(`SELECT length(id) AS len, "Source_Key", extra_fields, source_key LIKE '%clash.avro' AS ours FROM ev_odd.users_behaviors_clash`)).toEqual([
      { len: 9000, Source_Key: 'mixed', extra_fields: { source_key: 'lower' }, ours: true },
    ]);
    expect(await rows(`SELECT to_regclass('ev_odd.users_behaviors_broken') AS t`)).toEqual([{ t: null }]);

    // The next run is not blocked by the failed file, and loads a new one.
    await put(SEND, '2026-11-01-07', 'later', await encodeAvro(emailSendV1, emailSends(1, 200)));
    const second = await ingest(bucket, 'odd');
    expect(second.code, second.stderr).toBe(0);
    expect(JSON.parse(second.stdout).files).toMatchObject({ loaded: 1, failed: 0 });
  });

  it('keeps values exact: a float as written, longs beyond 2^53, decimals with their scale, NUL replaced and counted', async () => {
    const bucket = 'exact';
    await s3.createBucket(bucket);
    const schema = recordOf('Exact', [
      { name: 'price', type: 'float' },
      { name: 'ratio', type: 'double' },
      { name: 'big', type: 'long' },
      { name: 'amount', type: { type: 'bytes', logicalType: 'decimal', precision: 10, scale: 2 } },
      { name: 'label', type: 'string' },
      { name: 'properties', type: 'string' },
    ]);
    const amount = Buffer.from([0x04, 0xe2]); // 1250 unscaled = 12.50
    const records = [{ id: 'x1', user_id: 'u', time: 1_780_000_000, price: 3.14, ratio: 0.1, big: 9007199254740993n, amount, label: 'a\u0000b', properties: '{"k":"v\\u0000w","n\\u0000":1,"esc":"\\\\u0000"}' }];
    const { default: avro } = await import('avsc');
    const { exactTypeOptions } = await import('../src/currents/avro/exact-types.js');
    const type = avro.Type.forSchema(schema as never, exactTypeOptions());
    const encoder = new avro.streams.BlockEncoder(type);
    const chunks: Buffer[] = [];
    encoder.on('data', (c: Buffer) => chunks.push(c));
    const ended = new Promise((r) => encoder.on('end', r));
    for (const r of records) encoder.write({ ...r, amount: '12.50' });
    encoder.end();
    await ended;
    await s3.put(bucket, currentsKey('users.behaviors.Exact', '2026-11-02-00', 'x'), Buffer.concat(chunks));
    const r = await ingest(bucket, 'exact');
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ files: { loaded: 1, failed: 0 }, nulReplaced: 3 });
    expect(amount.readInt16BE()).toBe(1250);
    const row = (await rows(`SELECT price::text, ratio::text, big::text, amount::text, label, properties FROM ev_exact.users_behaviors_exact`))[0]!;
    expect(row).toEqual({ price: '3.14', ratio: '0.1', big: '9007199254740993', amount: '12.50', label: 'a\uFFFDb', properties: { k: 'v\uFFFDw', 'n\uFFFD': 1, esc: '\\u0000' } });
  });

  it('refuses impossible dates with the reason (a partial run that notifies), checks --since/--until, and says plainly when a prefix holds no files', async () => {
    const bucket = 'dates';
    await s3.createBucket(bucket);
    await s3.put(bucket, currentsKey(SEND, '2026-02-30-05', 'impossible'), await encodeAvro(emailSendV1, emailSends(1, 0)));
    await s3.put(bucket, currentsKey(SEND, '2026-03-02-05', 'real'), await encodeAvro(emailSendV1, emailSends(1, 10)));
    const webhook = await startWebhook();
    let r;
    try {
      r = await ingest(bucket, 'dates', '--notify-url', webhook.url);
      // A refused key is data that will never load: the run is partial and, like a failed file, alerts.
      expect(r.code, r.stderr).toBe(1);
      expect(webhook.posts).toEqual([expect.objectContaining({ job: 'ingest', text: expect.stringMatching(/1 key\(s\) refused, e\.g\. .*date=2026-02-30-05.*not a calendar date/) })]);
    } finally {
      await webhook.stop();
    }
    const summary = JSON.parse(r.stdout);
    expect(summary.status).toBe('partial');
    expect(summary.files).toMatchObject({ loaded: 1 });
    expect(summary.refusedKeys).toEqual([{ key: expect.stringContaining('date=2026-02-30-05'), reason: expect.stringMatching(/2026-02-30 is not a calendar date/) }]);
    expect(await rows(`SELECT hour FROM bb_dates.currents_files`)).toEqual([{ hour: new Date(Date.UTC(2026, 2, 2, 5)) }]);

    const badUntil = await ingest(bucket, 'dates', '--until', '2026-11-01-99');
    expect(badUntil.code).toBe(2);
    expect(badUntil.stderr).toMatch(/--until .*hour 99 does not exist/);
    const reversed = await ingest(bucket, 'dates', '--since', '2026-11-02', '--until', '2026-11-01');
    expect(reversed.code).toBe(2);

    // A mistyped prefix no longer reports the bucket's files as "already loaded" with exit 0.
    const wrong = await cli(['currents', 'ingest', '--source', `s3://${bucket}/curents`, ...schemas('dates')], env);
    expect(wrong.code).toBe(2);
    expect(wrong.stderr.trim().split('\n').at(-1)).toMatch(/no Currents files under s3:\/\/dates\/curents/);
  });

  it('an event table from before migration 0006 keeps loading: double precision price, primary key on id', async () => {
    const bucket = 'legacy';
    await s3.createBucket(bucket);
    await t.db.query(`CREATE SCHEMA ev_legacy`);
    await t.db.query(`CREATE TABLE ev_legacy.users_behaviors_purchase (id text PRIMARY KEY, user_id text, "time" bigint, product_id text, price double precision, currency text,
      properties jsonb, occurred_at timestamptz, source_key text NOT NULL, loaded_at timestamptz NOT NULL DEFAULT now())`);
    await t.db.query(`INSERT INTO ev_legacy.users_behaviors_purchase (id, user_id, price, source_key) VALUES ('old', 'u', 3.140000104904175, 'old.avro')`);
    const file = [{ id: 'p1', user_id: 'u', time: 1_780_000_000, product_id: 's', price: 19.99, currency: 'EUR', properties: '{}' }, { id: 'old', user_id: 'u', time: 1, product_id: 's', price: 1, currency: 'EUR', properties: '{}' }];
    await s3.put(bucket, currentsKey('users.behaviors.Purchase', '2026-11-03-00', 'p'), await encodeAvro(purchase, file));
    const r = await ingest(bucket, 'legacy');
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ rows: 1, duplicates: 1 });
    expect(await rows(`SELECT id, price FROM ev_legacy.users_behaviors_purchase ORDER BY id`)).toEqual([
      { id: 'old', price: 3.140000104904175 },
      { id: 'p1', price: 19.99 },
    ]);
  });

  it('a pending file whose object is gone from the bucket is marked failed with the reason, only in the scope the run listed', async () => {
    const bucket = 'gone';
    await s3.createBucket(bucket);
    await s3.put(bucket, currentsKey(SEND, '2026-11-04-00', 'a'), await encodeAvro(emailSendV1, emailSends(1, 0)));
    expect((await ingest(bucket, 'gone')).code).toBe(0);
    // Files an earlier run registered and was stopped before loading, whose objects were then
    // deleted (a lifecycle rule): one of the type this run lists, one of another type, one under another prefix.
    const pending = (key: string, type: string, hour: string) =>
      t.db.query(`INSERT INTO bb_gone.currents_files (source, key, etag, event_type, hour) VALUES ('s3://gone', $1, '"e"', $2, $3)`, [key, type, hour]);
    const deleted = currentsKey(SEND, '2026-11-04-01', 'deleted');
    await pending(deleted, SEND, '2026-11-04T01:00:00Z');
    await pending(currentsKey('users.behaviors.Purchase', '2026-11-04-01', 'other-type'), 'users.behaviors.Purchase', '2026-11-04T01:00:00Z');
    await pending(currentsKey(SEND, '2026-11-04-01', 'other-prefix', 'elsewhere'), SEND, '2026-11-04T01:00:00Z');
    await s3.put(bucket, currentsKey(SEND, '2026-11-04-02', 'b'), await encodeAvro(emailSendV1, emailSends(1, 10)));

    const r = await ingest(bucket, 'gone', '--event-types', SEND);
    expect(r.code, r.stderr).toBe(1);
    const summary = JSON.parse(r.stdout);
    expect(summary).toMatchObject({ status: 'partial', files: { loaded: 1, failed: 0, gone: 1, leftPending: 0 }, goneKeys: [deleted] });
    expect(await rows(`SELECT key, status, error FROM bb_gone.currents_files WHERE status <> 'loaded' ORDER BY status, key COLLATE "C"`)).toEqual([
      { key: deleted, status: 'failed', error: expect.stringMatching(/^gone from the bucket before it was loaded/) },
      { key: expect.stringContaining('users.behaviors.Purchase'), status: 'pending', error: null },
      { key: expect.stringMatching(/^elsewhere\//), status: 'pending', error: null },
    ]);
    const status = await cli(['currents', 'status', '--json', ...schemas('gone')], env);
    expect(JSON.parse(status.stdout).eventTypes).toEqual(expect.arrayContaining([expect.objectContaining({ eventType: SEND, filesLoaded: 2, failed: 1, gone: 1 })]));
    expect((await cli(['currents', 'status', ...schemas('gone')], env)).stdout).toMatch(/GONE: 1 file/);

    // Counted once: the next run finds nothing new gone, and a file still in the bucket is never marked.
    const again = await ingest(bucket, 'gone', '--event-types', SEND);
    expect(again.code, again.stderr).toBe(0);
    expect(JSON.parse(again.stdout).files).toMatchObject({ gone: 0, failed: 0 });
  });

  it('a table from before migration 0006 takes a 9 kB id: it gets id_key in the file\'s transaction, and its rows keep matching', async () => {
    const bucket = 'legacy-long';
    await s3.createBucket(bucket);
    await t.db.query(`CREATE SCHEMA ev_legacy_long`);
    await t.db.query(`CREATE TABLE ev_legacy_long.users_behaviors_purchase (id text PRIMARY KEY, user_id text, "time" bigint, product_id text, price double precision, currency text,
      properties jsonb, occurred_at timestamptz, source_key text NOT NULL, loaded_at timestamptz NOT NULL DEFAULT now())`);
    const midId = 'm'.repeat(1500); // over 1,000 bytes: its key becomes its MD5, and must still match
    await t.db.query(`INSERT INTO ev_legacy_long.users_behaviors_purchase (id, user_id, source_key) VALUES ('old', 'u', 'old.avro'), ($1, 'u', 'old.avro')`, [midId]);
    const longId = Array.from({ length: 9000 }, (_, i) => String.fromCharCode(33 + ((i * 7919) % 90))).join('');
    const event = (id: string) => ({ id, user_id: 'u', time: 1_780_000_000, product_id: 's', price: 1, currency: 'EUR', properties: '{}' });
    await s3.put(bucket, currentsKey('users.behaviors.Purchase', '2026-11-05-00', 'p'), await encodeAvro(purchase, [event(longId), event('old'), event(midId), event('new')]));
    const r = await ingest(bucket, 'legacy_long');
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ rows: 2, duplicates: 2, files: { failed: 0 } });
    expect(await rows(`SELECT a.attname::text AS key FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
      WHERE i.indrelid = 'ev_legacy_long.users_behaviors_purchase'::regclass AND i.indisprimary`)).toEqual([{ key: 'id_key' }]);
    expect(await rows(`SELECT length(id) AS len FROM ev_legacy_long.users_behaviors_purchase ORDER BY 1`)).toEqual([{ len: 3 }, { len: 3 }, { len: 1500 }, { len: 9000 }]);
    // The same events again, in a later file: all duplicates, the long one included.
    await s3.put(bucket, currentsKey('users.behaviors.Purchase', '2026-11-05-01', 'again'), await encodeAvro(purchase, [event(longId), event(midId)]));
    const again = await ingest(bucket, 'legacy_long');
    expect(again.code, again.stderr).toBe(0);
    expect(JSON.parse(again.stdout)).toMatchObject({ rows: 0, duplicates: 2 });
  });
});
