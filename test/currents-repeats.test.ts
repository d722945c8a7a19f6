/**
 * Repeated event ids (Currents delivers at least once) through the loader that writes each row
 * once (write-events.ts): repeats within a file, of an earlier run, of files loaded alongside,
 * and of another session's rows written meanwhile; counts and rows exact, and a file that
 * fails leaves nothing behind. Each test has its own folder (the manifest keys files by
 * source) and its own event schema.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { ingest } from '../src/currents/ingest.js';
import { openSource } from '../src/currents/source/open-source.js';
import type { LogFields, Logger } from '../src/log.js';
import { waitFor } from './helpers/cli.js';
import { useDatabaseAndFolder } from './helpers/fixture.js';
import { currentsKey, customEvent, emailSends, emailSendV1, encodeAvro, writeObject } from './helpers/avro.js';

const f = useDatabaseAndFolder('bb-repeats-');
const SEND = 'users.messages.email.Send';

type Line = { level: string; msg: string } & LogFields;
/** A logger that keeps its lines, to tell which way a file was loaded. */
function recorder(): Logger & { lines: Line[] } {
  const lines: Line[] = [];
  const make = (scope: LogFields): Logger => ({
    debug: () => {},
    info: (msg, f) => lines.push({ level: 'info', msg, ...scope, ...f }),
    warn: (msg, f) => lines.push({ level: 'warn', msg, ...scope, ...f }),
    error: (msg, f) => lines.push({ level: 'error', msg, ...scope, ...f }),
    child: (f) => make({ ...scope, ...f }),
  });
  return Object.assign(make({}), { lines });
}

/** A folder laid out like the bucket, and a run of `ingest` over it. */
function bucket(name: string) {
  const dir = join(f.dir, name);
  const log = recorder();
  return {
    dir,
    log,
    put: async (hour: string, file: string, records: object[], codec: 'null' | 'deflate' = 'deflate') => {
      const key = currentsKey(SEND, hour, file);
      writeObject(dir, key, await encodeAvro(emailSendV1, records, codec));
      return key;
    },
    run: (concurrency = 1) =>
      ingest(f.t.db, log, { source: openSource(`file://${dir}`), stateSchema: 'braze_bridge', targetSchema: `ev_${name}`, concurrency }),
    restarts: () => log.lines.filter((l) => l.msg === 'loading the file again through the staging table'),
  };
}

const rows = async (sql: string, values: unknown[] = []) => (await f.t.db.query(sql, values)).rows;
const table = (name: string) => `ev_${name}.users_messages_email_send`;
/** A copy of an event, delivered again; `mark` tells the copies from the first in the table. */
const again = (event: object, mark = 'repeat') => ({ ...event, campaign_name: mark });

describe('repeated event ids, each row written once', () => {
  it('a file repeating its own ids, within a batch and across batches, loads each id once and keeps the first copy', async () => {
    const b = bucket('own');
    const events = emailSends(45_000, 0);
    const records: object[] = [];
    events.forEach((e, i) => {
      records.push(e);
      if (i % 90 === 50) records.push(again(events[i - 40]!)); // 40 records later: the same batch
    });
    for (let j = 0; j < 300; j++) records.push(again(events[j * 7]!)); // at the end: tens of thousands of records later
    const key = await b.put('2026-11-01-00', 'own', records);

    const summary = await b.run();

    expect(summary).toMatchObject({ status: 'succeeded', files: { loaded: 1, failed: 0 }, rows: 45_000, duplicates: 800 });
    expect(await rows(`SELECT count(*)::int AS n, count(DISTINCT id)::int AS ids, count(*) FILTER (WHERE campaign_name = 'repeat')::int AS copies FROM ${table('own')}`)).toEqual([
      { n: 45_000, ids: 45_000, copies: 0 },
    ]);
    expect(await rows(`SELECT records::int, rows_loaded::int, duplicates::int FROM braze_bridge.currents_files WHERE key = $1`, [key])).toEqual([
      { records: 45_800, rows_loaded: 45_000, duplicates: 800 },
    ]);
    expect(b.restarts()).toEqual([]);
  });

  it('a file repeating ids an earlier run loaded (which this process never saw) skips exactly those, without loading the file again', async () => {
    const b = bucket('earlier');
    const first = emailSends(30_000, 0);
    await b.put('2026-11-01-00', 'first', first);
    expect(await b.run()).toMatchObject({ rows: 30_000, duplicates: 0 });
    // A later run: every third record repeats one of the first file's, spread over the whole file.
    const records = Array.from({ length: 30_000 }, (_, i) => (i % 3 === 0 ? again(first[20_000 + i / 3]!, 'again') : emailSends(1, 100_000 + i)[0]!));
    const key = await b.put('2026-11-01-01', 'later', records);

    const summary = await b.run();

    expect(summary).toMatchObject({ status: 'succeeded', files: { loaded: 1 }, rows: 20_000, duplicates: 10_000 });
    expect(await rows(`SELECT count(*)::int AS n, count(DISTINCT id)::int AS ids, count(*) FILTER (WHERE campaign_name = 'again')::int AS copies FROM ${table('earlier')}`)).toEqual([
      { n: 50_000, ids: 50_000, copies: 0 },
    ]);
    expect(await rows(`SELECT rows_loaded::int, duplicates::int FROM braze_bridge.currents_files WHERE key = $1`, [key])).toEqual([{ rows_loaded: 20_000, duplicates: 10_000 }]);
    // The first batch found the earlier rows in the table and was looked up in full: no second read.
    expect(b.restarts()).toEqual([]);
    expect(b.log.lines.filter((l) => l.msg === 'loaded file' && l.key === key).map((l) => l.batchesRedone)).toEqual([1]);
  });

  it("an earlier run's ids first met in a later batch: that batch alone is rolled back to the savepoint its lookup's message set, and redone", async () => {
    const b = bucket('laterbatch');
    const first = emailSends(8000, 0);
    await b.put('2026-11-01-00', 'first', first);
    expect(await b.run()).toMatchObject({ rows: 8000 });
    // A later run: 4,000 new events (the first batches, written in savepoints), then 3,000 of
    // the first run's again, interleaved with new ones.
    const records = [...emailSends(4000, 100_000), ...first.slice(0, 3000).flatMap((e, i) => [again(e, 'again'), emailSends(1, 200_000 + i)[0]!])];
    const key = await b.put('2026-11-01-01', 'later', records);

    expect(await b.run()).toMatchObject({ status: 'succeeded', files: { loaded: 1 }, rows: 7000, duplicates: 3000 });
    expect(await rows(`SELECT count(*)::int AS n, count(DISTINCT id)::int AS ids, count(*) FILTER (WHERE campaign_name = 'again')::int AS copies FROM ${table('laterbatch')}`)).toEqual([
      { n: 15_000, ids: 15_000, copies: 0 },
    ]);
    expect(b.restarts()).toEqual([]);
    expect(b.log.lines.filter((l) => l.msg === 'loaded file' && l.key === key).map((l) => l.batchesRedone)).toEqual([1]);
  });

  it('files repeating each other, themselves and an earlier run, loaded four at a time: counts and rows exact, no file read twice', async () => {
    const b = bucket('mixed');
    const earlier = emailSends(4000, 0);
    await b.put('2026-11-01-00', 'earlier', earlier);
    await b.run();
    // Six files of 4,000 new events, each also repeating 200 of the earlier run's, 200 of the
    // file before it and 200 of the file after it (so that files loading together repeat each
    // other: either may write those first) and, at its end, 200 of its own.
    const fresh = Array.from({ length: 6 }, (_, f) => emailSends(4000, 10_000 * (f + 1)));
    let records = 0;
    for (let f = 0; f < 6; f++) {
      const file: object[] = [...fresh[f]!];
      for (let j = 0; j < 200; j++) {
        file.splice(j * 20 + 1, 0, again(earlier[j * 11]!, 'earlier'));
        if (f > 0) file.splice(j * 20 + 5, 0, again(fresh[f - 1]![j * 13]!, 'neighbour'));
        if (f < 5) file.splice(j * 20 + 15, 0, again(fresh[f + 1]![j * 17]!, 'neighbour'));
      }
      for (let j = 0; j < 200; j++) file.push(again(fresh[f]![j * 19]!, 'own'));
      records += file.length;
      await b.put(`2026-11-01-0${f + 1}`, `f${f}`, file);
    }

    const summary = await b.run(4);

    expect(summary).toMatchObject({ status: 'succeeded', files: { loaded: 6, failed: 0 }, rows: 24_000, duplicates: records - 24_000 });
    expect(
      await rows(`SELECT count(*)::int AS n, count(DISTINCT id)::int AS ids, count(*) FILTER (WHERE campaign_name IN ('own', 'earlier'))::int AS copies FROM ${table('mixed')}`),
    ).toEqual([{ n: 28_000, ids: 28_000, copies: 0 }]);
    expect(await rows(`SELECT sum(records)::int AS records, sum(rows_loaded)::int AS loaded FROM braze_bridge.currents_files WHERE source = $1`, [`file://${b.dir}`])).toEqual([
      { records: records + 4000, loaded: 28_000 },
    ]);
    // Files of one process take turns to write: none waited for another's rows, none was read twice.
    expect(b.restarts()).toEqual([]);
    expect(b.log.lines.filter((l) => l.level !== 'info')).toEqual([]);
  });

  it('repeats looked up with the savepoint in one message: ids with quotes, backslashes, SQL and 2 kB of text; a batch with thousands of repeats', async () => {
    const b = bucket('inline');
    const odd = [`it's`, `back\\slash\\`, `E'\\x27'`, `'); DROP TABLE x; --`, `$1`, `ünï ☃ 😀`, `semi;colon`, 'l'.repeat(2000), `tab\there`];
    const oddEvents = odd.map((id, i) => ({ ...emailSends(1, 700_000 + i)[0]!, id }));
    const first = [...emailSends(5000, 0), ...oddEvents];
    // One run, two files of one type: the second's repeats are ids this process wrote in the
    // first, each looked up. Its first batch (256 kB) holds a few repeats, the next thousands.
    await b.put('2026-11-01-00', 'first', first);
    const second = [...oddEvents.map((e) => again(e)), ...emailSends(400, 10_000), ...first.slice(0, 5000).map((e) => again(e)), ...emailSends(600, 20_000)];
    const key = await b.put('2026-11-01-01', 'second', second);

    const summary = await b.run();

    expect(summary).toMatchObject({ status: 'succeeded', files: { loaded: 2, failed: 0 }, rows: 5000 + odd.length + 1000, duplicates: 5000 + odd.length });
    // Each odd id once, its first copy (emailSends' campaign name, not the repeat's mark).
    const stored = await rows(`SELECT id, campaign_name FROM ${table('inline')} WHERE id = ANY($1)`, [odd]);
    expect(stored.map((r) => r.id).sort()).toEqual([...odd].sort());
    expect(new Set(stored.map((r) => r.campaign_name))).toEqual(new Set([(emailSends(1)[0] as { campaign_name: string }).campaign_name]));
    expect(await rows(`SELECT count(*)::int AS n, count(DISTINCT id)::int AS ids, count(*) FILTER (WHERE campaign_name = 'repeat')::int AS copies FROM ${table('inline')}`)).toEqual([
      { n: 6000 + odd.length, ids: 6000 + odd.length, copies: 0 },
    ]);
    expect(await rows(`SELECT rows_loaded::int, duplicates::int FROM braze_bridge.currents_files WHERE key = $1`, [key])).toEqual([{ rows_loaded: 1000, duplicates: 5000 + odd.length }]);
    expect(b.restarts()).toEqual([]);
    expect(b.log.lines.filter((l) => l.msg === 'loaded file').map((l) => l.batchesRedone)).toEqual([undefined, undefined]);
  });

  it('files of one event type load oldest first whatever --concurrency, so a repeated event keeps its oldest copy; other types load alongside', async () => {
    const b = bucket('oldest');
    await b.put('2026-10-31-23', 'before', emailSends(10, 800_000));
    await b.run(); // the table exists: no file of this run waits for another to create it
    // The oldest file is long and repeats nothing until its end; the next one is short and holds
    // only those events again. Loaded side by side, the short file would write them first.
    const shared = emailSends(50, 900_000);
    const oldest = await b.put('2026-11-01-00', 'long', [...emailSends(30_000, 0), ...shared.map((e) => again(e, 'oldest'))]);
    await b.put('2026-11-01-01', 'short', shared.map((e) => again(e, 'newer')));
    await b.put('2026-11-01-02', 'later', [...emailSends(100, 50_000), ...shared.map((e) => again(e, 'latest'))]);
    const other = currentsKey('users.behaviors.CustomEvent', '2026-11-01-01', 'custom');
    writeObject(b.dir, other, await encodeAvro(customEvent, Array.from({ length: 20 }, (_, i) => ({ id: `c${i}`, user_id: 'u', time: 1, name: 'n', properties: '{}' }))));

    const summary = await b.run(4);

    expect(summary).toMatchObject({ status: 'succeeded', files: { loaded: 4, failed: 0 }, rows: 30_170, duplicates: 100 });
    expect(await rows(`SELECT count(*)::int AS n FROM ${table('oldest')}`)).toEqual([{ n: 30_160 }]);
    expect(await rows(`SELECT campaign_name, source_key, count(*)::int AS n FROM ${table('oldest')} WHERE id = ANY($1) GROUP BY 1, 2`, [shared.map((e) => (e as { id: string }).id)])).toEqual([
      { campaign_name: 'oldest', source_key: oldest, n: 50 },
    ]);
    expect(await rows(`SELECT count(*)::int AS n FROM ev_oldest.users_behaviors_customevent`)).toEqual([{ n: 20 }]);
    expect(b.restarts()).toEqual([]);
  });

  it('a body opened early that breaks before it is read is opened again; one that breaks while read leaves its file pending', async () => {
    const b = bucket('early');
    await b.put('2026-11-01-00', 'first', emailSends(3000, 0));
    const reset = await b.put('2026-11-01-01', 'reset', emailSends(10, 10_000));
    const broken = await b.put('2026-11-01-02', 'broken', emailSends(10, 20_000));
    await b.put('2026-11-01-03', 'last', emailSends(10, 30_000));
    const files = openSource(`file://${b.dir}`);
    const opens: string[] = [];
    const hangUp = (body: PassThrough) => setImmediate(() => body.destroy(Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' })));
    // `reset`: the first connection resets a moment after it is opened, before anything reads it.
    // `broken`: every connection gives the first bytes, then resets while the header is read.
    const source = Object.assign(Object.create(files) as typeof files, {
      open: async (key: string) => {
        opens.push(key);
        if (key === reset && opens.filter((k) => k === key).length === 1) {
          const body = new PassThrough();
          hangUp(body);
          return body;
        }
        if (key !== broken) return files.open(key);
        const body = new PassThrough();
        body.write(Buffer.from('Obj\x01', 'latin1'));
        setTimeout(() => hangUp(body), 20);
        return body;
      },
    });

    const summary = await ingest(f.t.db, b.log, { source, stateSchema: 'braze_bridge', targetSchema: 'ev_early', concurrency: 2 });

    expect(summary).toMatchObject({ status: 'partial', files: { loaded: 3, failed: 0, leftPending: 1 }, rows: 3020 });
    expect(opens.filter((k) => k === reset)).toHaveLength(2);
    expect(await rows(`SELECT status, error FROM braze_bridge.currents_files WHERE key = $1`, [broken])).toEqual([{ status: 'pending', error: expect.stringMatching(/socket hang up/) }]);
  });

  it("a row another session wrote meanwhile: the COPY waits, and when that session commits, the row is a duplicate; the file's other rows load", async () => {
    const b = bucket('session');
    await b.put('2026-11-01-00', 'first', emailSends(10, 0));
    await b.run();
    const records = emailSends(30_000, 1000);
    await b.put('2026-11-01-01', 'second', records);

    await f.t.db.withConnection(async (other) => {
      await other.query('BEGIN');
      await other.query(`INSERT INTO ${table('session')} (id, user_id, "time", email_address, source_key) VALUES ('send-15000', 'other', 1, 'o@example.com', 'other.avro')`);
      const loading = b.run();
      await waitingForLock();
      await other.query('COMMIT');
      expect(await loading).toMatchObject({ status: 'succeeded', rows: 29_999, duplicates: 1 });
    });
    expect(await rows(`SELECT user_id FROM ${table('session')} WHERE id = 'send-15000'`)).toEqual([{ user_id: 'other' }]);
    expect(await rows(`SELECT count(*)::int AS n FROM ${table('session')}`)).toEqual([{ n: 30_010 }]);
    expect(b.restarts()).toEqual([]);
  });

  it('a deadlock with another session (each waiting for a row the other wrote): the file is rolled back, claimed again and loaded exactly once', async () => {
    const b = bucket('deadlock');
    await b.put('2026-11-01-00', 'first', emailSends(10, 0));
    await b.run();
    // send-2000 comes early in the file, send-20000 later.
    await b.put('2026-11-01-01', 'second', emailSends(30_000, 1000));

    await f.t.db.withConnection(async (other) => {
      await other.query('BEGIN');
      await other.query(`INSERT INTO ${table('deadlock')} (id, user_id, "time", email_address, source_key) VALUES ('send-20000', 'other', 1, 'o@example.com', 'other.avro')`);
      const loading = b.run();
      // Once the file's COPY has written send-2000 and waits for send-20000, this session waits
      // for the file's send-2000: a cycle. PostgreSQL checks for one once per wait, when the
      // wait has lasted deadlock_timeout, and the session that checks while the cycle exists
      // gives way. For the file's session to be that one: the cycle must exist within its
      // deadlock_timeout, so the server watches for its wait and inserts at once, in one
      // statement (from here the insert could come late: this process is busy decoding the
      // file); and this session must not check first, so it waits longer before checking
      // (a superuser setting; without it, it starts waiting a moment later instead). This
      // session waits for the file's whole transaction (not the savepoint its row was written
      // in), so its insert goes through only once the file's is rolled back.
      await other.query(`DO $$
        DECLARE patient boolean := true;
        BEGIN
          BEGIN
            PERFORM set_config('deadlock_timeout', '60s', true);
          EXCEPTION WHEN insufficient_privilege THEN
            patient := false;
          END;
          FOR i IN 1..12000 LOOP
            PERFORM pg_stat_clear_snapshot();
            EXIT WHEN EXISTS (SELECT 1 FROM pg_stat_activity WHERE pg_backend_pid() = ANY (pg_blocking_pids(pid)));
            IF i = 12000 THEN RAISE EXCEPTION 'the file''s COPY never waited for send-20000 (60 s)'; END IF;
            PERFORM pg_sleep(0.005);
          END LOOP;
          IF NOT patient THEN PERFORM pg_sleep(0.2); END IF;
          INSERT INTO ${table('deadlock')} (id, user_id, "time", email_address, source_key) VALUES ('send-2000', 'other', 1, 'o@example.com', 'other.avro');
        END $$`);
      await other.query('COMMIT');
      expect(await loading).toMatchObject({ status: 'succeeded', files: { loaded: 1, failed: 0, leftPending: 0 }, rows: 29_998, duplicates: 2 });
    });
    expect(b.log.lines.filter((l) => l.level === 'warn')).toEqual([expect.objectContaining({ msg: 'file deadlocked with another session; rolled back', times: 1 })]);
    expect(b.restarts()).toEqual([]);
    expect(await rows(`SELECT id, user_id FROM ${table('deadlock')} WHERE id IN ('send-2000', 'send-20000') ORDER BY id`)).toEqual([
      { id: 'send-2000', user_id: 'other' },
      { id: 'send-20000', user_id: 'other' },
    ]);
    expect(await rows(`SELECT count(*)::int AS n, count(DISTINCT id)::int AS ids FROM ${table('deadlock')}`)).toEqual([{ n: 30_010, ids: 30_010 }]);
    expect(await rows(`SELECT status, attempts FROM braze_bridge.currents_files WHERE key LIKE '%second.avro' AND source = $1`, [`file://${b.dir}`])).toEqual([
      { status: 'loaded', attempts: 1 },
    ]);
  });

  it('a file that fails after some of its batches were written leaves none of its rows; the same events in a later file load', async () => {
    const b = bucket('broken');
    const events = emailSends(50_000, 0);
    const key = await b.put('2026-11-01-00', 'broken', events, 'null');
    // Cut inside the last block: the blocks before it decode, and are written, before the error.
    const path = join(b.dir, key);
    const bytes = readFileSync(path);
    writeFileSync(path, bytes.subarray(0, bytes.length - 100));
    // In the same run, after it: the same events, whole.
    await b.put('2026-11-01-01', 'whole', events);

    const summary = await b.run();

    expect(summary).toMatchObject({ status: 'partial', files: { loaded: 1, failed: 1 }, rows: 50_000, duplicates: 0 });
    expect(summary.failures[0]!.error).toMatch(/truncated file/);
    expect(summary.failures[0]!.recordIndex).toBeGreaterThan(40_000);
    expect(await rows(`SELECT count(*)::int AS n, count(DISTINCT id)::int AS ids, min(source_key) = max(source_key) AND min(source_key) LIKE '%whole.avro' AS whole FROM ${table('broken')}`)).toEqual([
      { n: 50_000, ids: 50_000, whole: true },
    ]);
  });
});

/** Until a session of this database waits for a row lock held by another transaction. */
async function waitingForLock(): Promise<void> {
  const waiting = `SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()`;
  await waitFor(async () => ((await f.t.db.query(waiting)).rowCount ?? 0) > 0, 'a session waits for a lock', { timeoutMs: 10_000, everyMs: 20 });
}
