import { beforeEach, describe, expect, it, onTestFinished } from 'vitest';
import { createDatabase, type Database } from '../src/db/pool.js';
import { useDatabaseAndSandbox } from './helpers/fixture.js';
import { audienceDir, run, testClient, writeAudiences } from './helpers/audiences.js';

const f = useDatabaseAndSandbox(async (t) => {
  await t.db.query(`CREATE TYPE mood AS ENUM ('happy', 'sad'); CREATE DOMAIN short_text AS text;`);
});

// Every test starts from the same rows, no snapshots and an empty sandbox.
beforeEach(async () => {
  await f.t.db.query(`
    DROP TABLE IF EXISTS typed;
    CREATE TABLE typed (
      id int PRIMARY KEY, b boolean, i2 smallint, i4 integer, i8 bigint, n numeric(12,2), n_wide numeric,
      r real, d double precision, t text, vc varchar(20), c char(5), u uuid, m mood, st short_text,
      dt date, ts timestamp, tstz timestamptz, arr text[], varr varchar[], j json, jb jsonb);
    INSERT INTO typed VALUES
      (1, true, 7, -42, 9007199254740991, 12.50, 1234567890.123456789, 0.1, 1e15, 'hello', 'short', 'ab', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'happy', 'dom',
       '2024-02-29', '2024-05-01 12:00:00.1239', '2026-03-01 12:34:56.789123+02', ARRAY['x','y','x'], ARRAY['v'], '{"b": 1, "a": {"z": null}}', '{"k": [1, 2], "nested": {"when": {"$time": "2024-01-01"}}}'),
      (2, false, NULL, 0, -1, -0.01, 0, -3.5, 2.5e-10, '', NULL, NULL, NULL, 'sad', NULL,
       NULL, NULL, '1999-12-31 23:59:59.999+00', '{}', NULL, NULL, 'null');
    TRUNCATE braze_bridge.snapshots, braze_bridge.runs, braze_bridge.audiences CASCADE;
  `);
  f.sandbox.reset();
});

/** A pool whose every session runs in `timezone`; closed when the test ends. */
async function poolIn(timezone: string): Promise<Database> {
  const db = createDatabase({ connectionString: `${f.t.url}?options=${encodeURIComponent(`-c timezone=${timezone}`)}`, max: 4 });
  onTestFinished(() => db.end());
  expect((await db.query(`SELECT current_setting('TimeZone') AS tz`)).rows[0]).toEqual({ tz: timezone });
  return db;
}

const ALL_COLUMNS = `SELECT id AS external_id, b, i2, i4, i8, n, n_wide, r, d, t, vc, c, u, m, st, dt, ts, tstz, arr, varr, j, jb FROM typed`;

/**
 * The first sync of `typed`, from sessions in Los Angeles time: what the "second run" tests
 * compare against. Returns its folder: a second run from another path would be refused.
 */
async function firstSync(): Promise<string> {
  const dir = audienceDir({ typed: `-- @identifier external_id\n${ALL_COLUMNS}` });
  const summary = await run(await poolIn('America/Los_Angeles'), dir, { client: testClient(f.sandbox.url) });
  expect(summary.audiences[0]!.counts).toMatchObject({ new: 2 });
  return dir;
}

describe('type mapping', () => {
  it('sends every supported type as the exact Braze JSON value', async () => {
    // The session time zone must not leak into what is sent.
    const dir = audienceDir({ typed: `-- @identifier external_id\n${ALL_COLUMNS}` });
    const summary = await run(await poolIn('America/Los_Angeles'), dir, { client: testClient(f.sandbox.url) });
    expect(summary.exitCode).toBe(0);
    expect(f.sandbox.profile({ external_id: '1' })).toEqual({
      b: true,
      i2: 7,
      i4: -42,
      i8: 9007199254740991,
      n: 12.5,
      n_wide: 1234567890.123456789,
      r: 0.1,
      d: 1e15,
      t: 'hello',
      vc: 'short',
      c: 'ab',
      u: 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
      m: 'happy',
      st: 'dom',
      dt: '2024-02-29',
      ts: '2024-05-01T12:00:00.123Z',
      tstz: '2026-03-01T10:34:56.789Z',
      arr: ['x', 'y'], // sent as ['x', 'y', 'x']; Braze keeps an array's duplicates once
      varr: ['v'],
      j: { a: { z: null }, b: 1 },
      jb: { k: [1, 2], nested: { when: { $time: '2024-01-01' } } },
    });
    // NULL columns are not sent to a new member; a JSON null counts as NULL.
    expect(f.sandbox.profile({ external_id: '2' })).toEqual({
      b: false,
      i4: 0,
      i8: -1,
      n: -0.01,
      n_wide: 0,
      r: -3.5,
      d: 2.5e-10,
      t: '',
      m: 'sad',
      tstz: '1999-12-31T23:59:59.999Z',
      arr: [],
    });
  });

  it('finds no change on a second run: no false changes from formatting, key order or time zones', async () => {
    const dir = await firstSync();
    const before = f.sandbox.counts.requests;
    const summary = await run(f.t.db, dir, { client: testClient(f.sandbox.url) });
    expect(summary.audiences[0]!.counts).toMatchObject({ members: 2, new: 0, changed: 0, unchanged: 2, updates: 0 });
    expect(f.sandbox.counts.requests).toBe(before);
  });

  it('a session time zone change is no change at all', async () => {
    const dir = await firstSync();
    const tokyo = await poolIn('Asia/Tokyo');
    const requests = f.sandbox.counts.requests;
    const summary = await run(tokyo, dir, { client: testClient(f.sandbox.url) });
    expect(summary.audiences[0]!.counts).toMatchObject({ changed: 0, unchanged: 2, updates: 0 });
    expect(f.sandbox.counts.requests).toBe(requests);
  });

  it('floats go out as their exact text on a first sync and on later changes alike, whatever the session\'s extra_float_digits', async () => {
    const lossy = createDatabase({ connectionString: `${f.t.url}?options=${encodeURIComponent('-c extra_float_digits=0')}`, max: 4 });
    onTestFinished(() => lossy.end());
    expect((await lossy.query(`SELECT (1::real / 3::real)::text AS third`)).rows[0]).toEqual({ third: '0.333333' });
    await f.t.db.query(`UPDATE typed SET r = 1::real / 3::real, d = 2::float8 / 3`);
    const dir = audienceDir({ typed: `SELECT id AS external_id, r, d, t FROM typed` });
    await run(lossy, dir, { client: testClient(f.sandbox.url) });
    expect(f.sandbox.profile({ external_id: '1' })).toEqual({ r: 0.33333334, d: 0.6666666666666666, t: 'hello' });
    await f.t.db.query(`UPDATE typed SET t = 'changed' WHERE id = 1`);
    const mark = f.sandbox.requests.length;
    const second = await run(lossy, dir, { client: testClient(f.sandbox.url) });
    expect(second.audiences[0]!.counts).toMatchObject({ changed: 1, updates: 1 });
    expect(f.sandbox.requests.slice(mark).flatMap((r) => r.attributes)).toEqual([{ external_id: '1', _update_existing_only: false, t: 'changed' }]);
    // The session's own setting is left as it was.
    expect((await lossy.query(`SELECT current_setting('extra_float_digits') AS e`)).rows).toEqual([{ e: '0' }]);
  });

  it('a new column signature with equal values sends nothing and records the new row hashes', async () => {
    const dir = await firstSync();
    const hashes = async () => (await f.t.db.query(`SELECT member_key, row_hash FROM braze_bridge.snapshots WHERE audience = 'typed' ORDER BY 1`)).rows;
    const before = await hashes();
    // i4 becomes bigint and t becomes varchar: every row is re-examined, none has changed.
    const recast = ALL_COLUMNS.replace(' i4,', ' i4::bigint AS i4,').replace(' t,', ' t::varchar AS t,');
    writeAudiences(dir, { typed: `-- @identifier external_id\n${recast}` });
    const requests = f.sandbox.counts.requests;
    const summary = await run(f.t.db, dir, { client: testClient(f.sandbox.url) });
    expect(summary.audiences[0]!.counts).toMatchObject({ changed: 0, unchanged: 2, updates: 0 });
    expect(f.sandbox.counts.requests).toBe(requests);
    const after = await hashes();
    expect(after).not.toEqual(before);
    await run(f.t.db, dir, { client: testClient(f.sandbox.url) });
    expect(await hashes()).toEqual(after);
    expect(f.sandbox.counts.requests).toBe(requests);
  });

  it('a case-insensitive collation hides no change: a value or a key differing only in case is a change', async (ctx) => {
    try {
      await f.t.db.query(`CREATE COLLATION IF NOT EXISTS case_blind (provider = icu, locale = 'und-u-ks-level2', deterministic = false)`);
    } catch (error) {
      ctx.skip(`this server has no ICU collations: ${(error as Error).message}`);
    }
    await f.t.db.query(`DROP TABLE IF EXISTS blind; CREATE TABLE blind (id text COLLATE case_blind, v text COLLATE case_blind, tags text[] COLLATE case_blind);
      INSERT INTO blind VALUES ('abc', 'x', ARRAY['a']), ('keep', 'k', ARRAY['k'])`);
    const dir = audienceDir({ blind: 'SELECT id AS external_id, v, tags FROM blind' });
    const sync = async () => (await run(f.t.db, dir, { client: testClient(f.sandbox.url) })).audiences[0]!;
    expect((await sync()).counts).toMatchObject({ new: 2 });

    await f.t.db.query(`UPDATE blind SET v = 'X', tags = ARRAY['A'] WHERE id = 'abc'`);
    expect((await sync()).counts).toMatchObject({ changed: 1, unchanged: 1 });
    expect(f.sandbox.profile({ external_id: 'abc' })).toMatchObject({ v: 'X', tags: ['A'] });

    // Braze's external_id is case-sensitive: ABC is another profile, and abc has left.
    await f.t.db.query(`UPDATE blind SET id = 'ABC' WHERE id = 'abc'`);
    expect((await sync()).counts).toMatchObject({ new: 1, exited: 1, unchanged: 1 });
    expect(f.sandbox.profile({ external_id: 'ABC' })).toMatchObject({ v: 'X', tags: ['A'] });
    expect(f.sandbox.profile({ external_id: 'abc' })).not.toHaveProperty('v');
    expect((await sync()).counts).toMatchObject({ new: 0, changed: 0, exited: 0, unchanged: 2 });
  });

  it('sends a value that became NULL as null, and only that attribute', async () => {
    const dir = await firstSync();
    await f.t.db.query(`UPDATE typed SET t = NULL, n = 12.500 WHERE id = 1`); // 12.500 = 12.50: no change
    const start = f.sandbox.requests.length;
    const summary = await run(f.t.db, dir, { client: testClient(f.sandbox.url) });
    expect(summary.audiences[0]!.counts).toMatchObject({ changed: 1, updates: 1 });
    const sent = f.sandbox.requests.slice(start).flatMap((r) => r.attributes);
    expect(sent).toEqual([{ external_id: '1', _update_existing_only: false, t: null }]);
    expect(f.sandbox.profile({ external_id: '1' })).not.toHaveProperty('t');
  });

  it('names the column and type it cannot send, and sends nothing for that audience', async () => {
    const dir = audienceDir({ bad: `SELECT id AS external_id, interval '1 day' AS wait FROM typed` });
    const before = f.sandbox.counts.requests;
    const summary = await run(f.t.db, dir, { client: testClient(f.sandbox.url) });
    expect(summary.exitCode).toBe(2);
    expect(summary.audiences[0]!.error).toMatch(/bad\.sql: column "wait" has type interval.*cast it/);
    expect(f.sandbox.counts.requests).toBe(before);
  });

  it('fails members Braze would reject, records why, and sends the rest', async () => {
    await f.t.db.query(`DROP TABLE IF EXISTS edge; CREATE TABLE edge (id text, big bigint, s text, f double precision, o jsonb, tags text[])`);
    await f.t.db.query(`INSERT INTO edge VALUES
      ('ok', 1, 'fine', 1.5, '{"a":1}', ARRAY['a']),
      ('big', 9007199254740993, 'x', 1, NULL, NULL),
      ('long', 1, repeat('x', 256), 1, NULL, NULL),
      ('nan', 1, 'x', 'NaN', NULL, NULL),
      ('arr', 1, 'x', 1, '[1,2]', NULL),
      ('nulltag', 1, 'x', 1, NULL, ARRAY['a', NULL]),
      ('dup', 1, 'x', 1, NULL, NULL), ('dup', 2, 'y', 1, NULL, NULL),
      (NULL, 1, 'x', 1, NULL, NULL), ('', 1, 'x', 1, NULL, NULL)`);
    const dir = audienceDir({ edge: `SELECT id AS external_id, big, s, f, o, tags FROM edge` });
    const summary = await run(f.t.db, dir, { client: testClient(f.sandbox.url) });
    const a = summary.audiences[0]!;
    expect(a.exitCode).toBe(1);
    expect(a.counts).toMatchObject({ new: 1, failed: 8 }); // 6 invalid members + 2 rows without an id
    expect(f.sandbox.profile({ external_id: 'ok' })).toEqual({ big: 1, s: 'fine', f: 1.5, o: { a: 1 }, tags: ['a'] });
    for (const id of ['big', 'long', 'nan', 'arr', 'nulltag', 'dup']) expect(f.sandbox.profile({ external_id: id })).toBeUndefined();
    const { rows } = await f.t.db.query<{ member_key: string | null; reason: string }>(
      `SELECT member_key, reason FROM braze_bridge.member_failures WHERE run_id = $1 ORDER BY member_key NULLS LAST`,
      [a.runId],
    );
    expect(rows).toEqual([
      { member_key: 'arr', reason: expect.stringContaining('o: JSON value is not an object') },
      { member_key: 'big', reason: expect.stringContaining('big: integer beyond ±2^53') },
      { member_key: 'dup', reason: 'identifier appears in 2 rows of the result' },
      { member_key: 'long', reason: expect.stringContaining('s: longer than 255 characters') },
      { member_key: 'nan', reason: expect.stringContaining('f: NaN or infinity') },
      { member_key: 'nulltag', reason: expect.stringContaining('tags: array contains NULL') },
      { member_key: null, reason: '2 row(s) with a NULL or empty external_id were skipped' },
    ]);
    // Values of people never appear in failure reasons.
    expect(rows.map((r) => r.reason).join(' ')).not.toMatch(/9007199254740993|xxxx/);
  });
});
