/**
 * The audience file is a checked contract: read-only for real, every header, identifier and
 * value checked, every refusal one line naming the file, the line or the column, and people's
 * values never in an error. Through the CLI and the library, against real PostgreSQL and the
 * strict Braze sandbox.
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeEach, describe, expect, it } from 'vitest';
import { useDatabaseAndSandbox } from './helpers/fixture.js';
import { audienceDir, run, testClient } from './helpers/audiences.js';
import { cli } from './helpers/cli.js';
import { loadAudience } from '../src/audience/load-audience.js';

const f = useDatabaseAndSandbox();

beforeEach(async () => {
  await f.t.db.query(`DROP TABLE IF EXISTS victims; CREATE TABLE victims (id int PRIMARY KEY, tier text); INSERT INTO victims SELECT i, 'gold' FROM generate_series(1, 5) i`);
  await f.t.db.query(`TRUNCATE braze_bridge.snapshots, braze_bridge.runs, braze_bridge.audiences CASCADE`);
  f.sandbox.reset();
});

const env = () => (f.env);
const victims = async () => (await f.t.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM victims`)).rows[0]!.n;
/** What the run recorded per failed member: its key and reason. */
const failureReasonsByKey = async (runId: number): Promise<Record<string, string>> => {
  const { rows } = await f.t.db.query<{ member_key: string; reason: string }>(`SELECT member_key, reason FROM braze_bridge.member_failures WHERE run_id = $1 AND member_key IS NOT NULL`, [runId]);
  return Object.fromEntries(rows.map((r) => [r.member_key, r.reason]));
};
const oneFile = (name: string, text: string) => {
  const dir = mkdtempSync(join(tmpdir(), 'bb-contract-'));
  writeFileSync(join(dir, `${name}.sql`), text);
  return { dir, file: join(dir, `${name}.sql`) };
};
const loadError = (text: string | Buffer): string => {
  const { file } = oneFile('a', '');
  writeFileSync(file, text);
  try {
    loadAudience(file);
  } catch (error) {
    return (error as Error).message;
  }
  return 'loaded';
};

describe('read-only for real', () => {
  // Balances the wrapper's parenthesis: a second statement that would delete rows.
  const escape = `SELECT 1 AS external_id) AS q LIMIT 0; DELETE FROM victims; SELECT * FROM (SELECT 1 AS external_id`;

  it.each(['plan', 'sync'])('%s: a file that breaks out of the wrapper is refused and the database is untouched', async (command) => {
    const { dir } = oneFile('escape', escape);
    const r = await cli([command, '--audiences', dir], env());
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/escape\.sql:\d+: more than one statement/);
    expect(await victims()).toBe(5);
  });

  it.each([
    ['plan', 'IMMUTABLE'],
    ['sync', 'IMMUTABLE'],
    ['plan', 'VOLATILE'],
    ['sync', 'VOLATILE'],
  ])('%s: a function that writes (declared %s) cannot write, at planning or at run time', async (command, volatility) => {
    await f.t.db.query(`CREATE OR REPLACE FUNCTION sneaky(x int) RETURNS int LANGUAGE plpgsql ${volatility} AS $$ BEGIN EXECUTE 'DELETE FROM victims'; RETURN x; END $$`);
    // Called with a constant too: the planner evaluates an IMMUTABLE call while it plans.
    const { dir } = oneFile('sneaky', `SELECT sneaky(id) AS external_id, sneaky(1) AS one, tier FROM victims`);
    const r = await cli([command, '--audiences', dir], env());
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/sneaky\.sql.*(read-only|non-volatile function)/);
    expect(await victims()).toBe(5);
  });
});

describe('headers and files', () => {
  it('block comments and blank lines may sit among header lines; BOM accepted; a comment after the final ; allowed', () => {
    const { file } = oneFile('ok', '');
    writeFileSync(file, '\uFEFF/* owner: crm team\n   reviewed 2026 */\n\n-- @identifier external_id\n/* one more */\n-- @on_exit keep\nSELECT 1 AS external_id; -- done\n');
    const a = loadAudience(file);
    expect(a).toMatchObject({ identifier: 'external_id', onExit: { kind: 'keep' }, sql: 'SELECT 1 AS external_id' });
  });

  it.each([
    ['-- @ identifier external_id\nSELECT 1', /a\.sql:1: .*no space after @/],
    ['SELECT 1 AS external_id\n-- @on_exit keep\n', /a\.sql:2: a header line below the query is ignored/],
    ['-- @colour blue\nSELECT 1', /a\.sql:1: @colour is not a known header key/],
    ['-- @schedule 99 * * * *\nSELECT 1', /a\.sql:1: @schedule must be a 5-field cron expression/],
    ['-- @on_exit {"external_id": "someone-else"}\nSELECT 1', /key "external_id": is an identifier or control key/],
    ['-- @on_exit {"visits": {"inc": 1}}\nSELECT 1', /key "visits": an object Braze would read as an operation/],
    ['-- @on_exit {"prefs": {"a b": 1}}\nSELECT 1', /nested keys may not hold a space/],
    ['-- @on_exit {"name": "' + 'x'.repeat(256) + '"}\nSELECT 1', /longer than 255 characters/],
    ['SELECT 1 AS external_id;\nDELETE FROM victims', /a\.sql:2: more than one statement/],
  ])('refuses %j with its line', (text, expected) => {
    expect(loadError(text)).toMatch(expected);
  });

  it('refuses a file that is not UTF-8', () => {
    expect(loadError(Buffer.from([0x2d, 0x2d, 0x20, 0xe9, 0x0a, 0x53, 0x45, 0x4c, 0x45, 0x43, 0x54, 0x20, 0x31]))).toMatch(/not UTF-8/);
  });

  it('ignores hidden files and editor leftovers in the folder', async () => {
    const dir = audienceDir({ real: `SELECT id AS external_id, tier FROM victims` });
    writeFileSync(join(dir, '.real.sql'), 'garbage');
    writeFileSync(join(dir, '#real.sql'), 'garbage');
    writeFileSync(join(dir, 'real.sql~'), 'garbage');
    const summary = await run(f.t.db, dir, { client: testClient(f.sandbox.url) });
    expect(summary.audiences.map((a) => a.audience)).toEqual(['real']);
    expect(summary.exitCode).toBe(0);
  });

  it('a syntax error points at the line of the file, and a column name PostgreSQL would cut is refused', async () => {
    const { dir } = oneFile('typo', `-- @identifier external_id\n\nSELECT id AS external_id,\n       tier\nFROM victims\nWHER id > 1`);
    const r = await run(f.t.db, dir, { client: testClient(f.sandbox.url) });
    expect(r.audiences[0]!.error).toMatch(/typo\.sql:6: syntax error/);
    const long = audienceDir({ long: `SELECT id AS external_id, tier AS ${'a'.repeat(70)} FROM victims` });
    const l = await run(f.t.db, long, { client: testClient(f.sandbox.url) });
    expect(l.exitCode).toBe(2);
    expect(l.audiences[0]!.error).toMatch(/longer than PostgreSQL's 63 bytes/);
  });
});

describe('identifiers', () => {
  it('refuses a column Braze would match before the audience\'s own identifier', async () => {
    await f.t.db.query(`ALTER TABLE victims ADD COLUMN phone text, ADD COLUMN mail text; UPDATE victims SET phone = '+4915100000' || id, mail = id || '@example.com'`);
    const dir = audienceDir({ by_phone: `-- @identifier phone\nSELECT phone, mail AS email, tier FROM victims` });
    const r = await run(f.t.db, dir, { client: testClient(f.sandbox.url) });
    expect(r.exitCode).toBe(2);
    expect(r.audiences[0]!.error).toMatch(/column "email" would make Braze match profiles by email instead of this audience's @identifier phone/);
  });

  it('fails padded, blank and malformed identifiers with a reason, and emails differing only in case are duplicates', async () => {
    await f.t.db.query(`CREATE TABLE IF NOT EXISTS contacts (mail text, tier text); TRUNCATE contacts;
      INSERT INTO contacts VALUES ('ok@example.com', 'a'), (' pad@example.com', 'b'), ('   ', 'c'), ('not-an-email', 'd'),
                                  ('Same@Example.com', 'e'), ('same@example.com', 'f')`);
    const dir = audienceDir({ mails: `SELECT mail AS email, tier FROM contacts` });
    const r = await run(f.t.db, dir, { client: testClient(f.sandbox.url) });
    const a = r.audiences[0]!;
    expect(a.counts).toMatchObject({ new: 1 });
    const reasons = await failureReasonsByKey(a.runId!);
    expect(reasons[' pad@example.com']).toMatch(/leading or trailing whitespace/);
    expect(reasons['   ']).toMatch(/only whitespace/);
    expect(reasons['not-an-email']).toMatch(/not an email address/);
    expect(reasons['Same@Example.com']).toMatch(/appears in 2 rows of the result \(differing only in case\)/);
    expect(f.sandbox.profiles.size).toBe(1);
  });
});

describe('values, member by member', () => {
  it('fails each member Braze would reject or misread, with the column and reason, and sends the others', async () => {
    await f.t.db.query(`DROP TABLE IF EXISTS odd; CREATE TABLE odd (id text, tags text[], o jsonb, d date, n numeric, b bigint, s text, gender text, country text, dob text)`);
    await f.t.db.query(`INSERT INTO odd VALUES
      ('fine', ARRAY['a'], '{"k": 1, "when": {"$time": "2024-01-01"}}', '2024-01-01', 1.5, 1, 'x', 'F', 'DE', '1990-01-31'),
      ('grid', ARRAY[['a','b'],['c','d']], NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
      ('many', (SELECT array_agg('t' || i) FROM generate_series(1, 26) i), NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
      ('op', NULL, '{"inc": 5}', NULL, NULL, NULL, NULL, NULL, NULL, NULL),
      ('dotted', NULL, '{"a": {"b.c": 1}}', NULL, NULL, NULL, NULL, NULL, NULL, NULL),
      ('bc', NULL, NULL, '0044-03-15 BC', NULL, NULL, NULL, NULL, NULL, NULL),
      ('sentinel', NULL, NULL, '9999-12-31', NULL, NULL, NULL, NULL, NULL, NULL),
      ('huge', NULL, NULL, NULL, 12345678901234567890, NULL, NULL, NULL, NULL, NULL),
      ('minint', NULL, NULL, NULL, NULL, -9223372036854775808, NULL, NULL, NULL, NULL),
      ('emoji', NULL, NULL, NULL, NULL, NULL, repeat('😀', 128), NULL, NULL, NULL),
      ('gender', NULL, NULL, NULL, NULL, NULL, NULL, 'female', NULL, NULL),
      ('country', NULL, NULL, NULL, NULL, NULL, NULL, NULL, 'Germany', NULL),
      ('dob', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '31/01/1990')`);
    const dir = audienceDir({ odd: `SELECT id AS external_id, tags, o, d, n, b, s, gender, country, dob FROM odd` });
    const r = await run(f.t.db, dir, { client: testClient(f.sandbox.url) });
    const a = r.audiences[0]!;
    expect(a.exitCode).toBe(1); // partial: the others went out, nothing aborted
    expect(a.counts.new).toBe(1);
    expect(f.sandbox.profile({ external_id: 'fine' })).toMatchObject({ tags: ['a'], gender: 'F', country: 'DE', dob: '1990-01-31' });
    const byKey = await failureReasonsByKey(a.runId!);
    // The summary (it reaches --json and the notify webhook) carries counts, not member keys.
    expect((a.failureReasons ?? []).every((x) => x.examples.length === 0)).toBe(true);
    expect(byKey).toMatchObject({
      grid: expect.stringMatching(/tags: multi-dimensional array/),
      many: expect.stringMatching(/tags: array longer than 25 items/),
      op: expect.stringMatching(/o: JSON object has a key Braze reads as an operation/),
      dotted: expect.stringMatching(/o: nested key with a space, "\." or "\$"/),
      bc: expect.stringMatching(/d: year outside 0001–3000/),
      sentinel: expect.stringMatching(/d: year outside 0001–3000/),
      huge: expect.stringMatching(/n: number beyond ±2\^53/),
      minint: expect.stringMatching(/b: integer beyond ±2\^53/),
      emoji: expect.stringMatching(/s: longer than 255 characters as Braze counts them/),
      gender: expect.stringMatching(/gender is one of M, F, O, N, P/),
      country: expect.stringMatching(/country is an ISO 3166-1 alpha-2 code/),
      dob: expect.stringMatching(/dob is a date, YYYY-MM-DD/),
    });
    // Reasons name the column, never the value.
    expect(JSON.stringify(byKey)).not.toMatch(/female|Germany|31\/01\/1990|12345678901234567890/);
  });

  it('--max-array-length raises the array limit', async () => {
    await f.t.db.query(`DROP TABLE IF EXISTS lists; CREATE TABLE lists (id text, tags text[]); INSERT INTO lists SELECT 'l', array_agg('t' || i) FROM generate_series(1, 40) i`);
    const dir = audienceDir({ lists: `SELECT id AS external_id, tags FROM lists` });
    const { dir: d2 } = { dir };
    const r = await cli(['sync', '--audiences', d2, '--max-array-length', '50', '--json'], env());
    expect(r.code, r.stderr).toBe(0);
    expect((f.sandbox.profile({ external_id: 'l' })!.tags as string[]).length).toBe(40);
  });
});

describe('errors and time limits', () => {
  it('never carries a person\'s value quoted by PostgreSQL into the logs, the run history or the summary', async () => {
    await f.t.db.query(`DROP TABLE IF EXISTS leaky; CREATE TABLE leaky (id text, contact text); INSERT INTO leaky VALUES ('1', 'ann.private@example.com')`);
    const { dir } = oneFile('leaky', `SELECT id AS external_id, contact::int AS n FROM leaky`);
    const r = await cli(['sync', '--audiences', dir, '--json'], env());
    expect(r.code).toBe(2);
    expect(r.stdout).toMatch(/invalid input syntax for type integer/);
    expect(r.stdout + r.stderr).not.toContain('ann.private');
    const runs = await f.t.db.query<{ e: string }>(`SELECT coalesce(error, '') AS e FROM braze_bridge.runs`);
    expect(runs.rows.map((x) => x.e).join('')).not.toContain('ann.private');
  });

  it('--statement-timeout cancels a runaway query with one line, and DATABASE_URL options keep the tool\'s own settings', async () => {
    const { dir } = oneFile('slow', `SELECT id AS external_id, pg_sleep(5)::text AS waited FROM victims`);
    const started = Date.now();
    const r = await cli(['sync', '--audiences', dir, '--statement-timeout', '1'], env());
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/slow\.sql: the query was cancelled: it ran longer than --statement-timeout \(on a first sync it also covers building every member's payload/);
    expect(Date.now() - started).toBeLessThan(20_000);

    const { dir: settings } = oneFile('settings', `SELECT 1 AS external_id, current_setting('temp_buffers') AS tb, current_setting('work_mem') AS wm, current_setting('client_encoding') AS enc`);
    // The session's text is UTF-8, as node-postgres reads and writes it, whatever the URL asks.
    const url = `${f.t.url}?options=${encodeURIComponent('-c work_mem=7MB -c client_encoding=SJIS')}`;
    const out = join(mkdtempSync(join(tmpdir(), 'bb-plan-')), 'plan.ndjson');
    const p = await cli(['plan', '--audiences', settings, '--out', out], { ...env(), DATABASE_URL: url });
    expect(p.code, p.stderr).toBe(0);
    const body = JSON.parse(readFileSync(out, 'utf8').trim());
    expect(body.attributes[0]).toMatchObject({ tb: '512MB', enc: 'UTF8' });
  });

  it('points at the right line when characters beyond U+FFFF come before the error', async () => {
    // PostgreSQL counts the position in characters; each emoji is two UTF-16 units in JavaScript.
    const { dir } = oneFile('emoji', `SELECT id AS external_id, '${'\u{1F389}'.repeat(10)}' AS party, tier FROM victims WHERE\nnosuch = 1`);
    const r = await cli(['plan', '--audiences', dir], env());
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/emoji\.sql:2: column \W+nosuch\W+ does not exist/);
  });

  it('plan prints why members cannot be sent, with counts and a few keys', async () => {
    const dir = audienceDir({ shown: `SELECT id::text || CASE WHEN id > 3 THEN ' ' ELSE '' END AS external_id, tier FROM victims` });
    const r = await cli(['plan', '--audiences', dir], env());
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/shown: 2 member\(s\) cannot be sent: external_id: the identifier has leading or trailing whitespace \(e\.g\. 4 , 5 \)/);
  });
});

describe('edges the review found', () => {
  it('a query that changes the session (settings, advisory locks) is refused, and the next run is unharmed', async () => {
    const { dir } = oneFile(
      'session',
      `SELECT id AS external_id, tier FROM victims WHERE pg_advisory_unlock_all()::text <> 'x' AND set_config('search_path', 'evil, pg_catalog', false) <> ''`,
    );
    const r = await run(f.t.db, dir, { client: testClient(f.sandbox.url) });
    expect(r.exitCode).toBe(2);
    expect(r.audiences[0]!.error).toMatch(/changed session settings or advisory locks/);
    expect(f.sandbox.counts.requests).toBe(0);
    const clean = audienceDir({ clean: `SELECT id AS external_id, tier, current_setting('search_path') AS sp FROM victims` });
    await run(f.t.db, clean, { client: testClient(f.sandbox.url) });
    expect(f.sandbox.profile({ external_id: '1' })!.sp).not.toMatch(/evil/);
  });

  it('a value with a quote inside never leaks through a PostgreSQL error', async () => {
    await f.t.db.query(`DROP TABLE IF EXISTS leaky2; CREATE TABLE leaky2 (id text, contact text); INSERT INTO leaky2 VALUES ('1', 'ann"private@example.com')`);
    const { dir } = oneFile('leaky2', `SELECT id AS external_id, contact::int AS n FROM leaky2`);
    const r = await cli(['sync', '--audiences', dir, '--json'], env());
    expect(r.code).toBe(2);
    expect(r.stdout + r.stderr).not.toContain('private@example.com');
    expect(r.stdout).toMatch(/invalid input syntax for type integer: \(value hidden\)/);
  });

  it.each([
    // é…e' is an identifier followed by a plain string, not an E'…' string.
    [`SELECT 1 AS ée'\\' AS z; DELETE FROM victims; SELECT 1 AS external_id --'`],
    [`SELECT 1 AS é$a$; DELETE FROM victims; SELECT $a$ AS external_id`],
    [`SELECT 1 AS external_id --c\r; DELETE FROM victims`],
  ])('finds a second statement the lexer could miss: %j', (text) => {
    expect(loadError(text)).toMatch(/more than one statement/);
  });

  it('accepts a dollar quote with a non-ASCII tag holding a ;', () => {
    expect(loadError(`SELECT $é$a;b$é$ AS external_id`)).toBe('loaded');
  });

  it('the server refuses a second statement even if it reached describe', async () => {
    await expect(f.t.db.describe(`SELECT 1; DELETE FROM victims`)).rejects.toThrow(/multiple commands/);
    expect(await victims()).toBe(5);
  });

  it('an IMMUTABLE wrapper around a writing function cannot write', async () => {
    await f.t.db.query(`CREATE OR REPLACE FUNCTION writer() RETURNS int LANGUAGE plpgsql VOLATILE AS $$ BEGIN DELETE FROM victims; RETURN 1; END $$;
      CREATE OR REPLACE FUNCTION wrapper(x int) RETURNS int LANGUAGE sql IMMUTABLE AS $$ SELECT x + writer() - 1 $$`);
    for (const command of ['plan', 'sync']) {
      const { dir } = oneFile('wrapped', `SELECT wrapper(id) AS external_id, wrapper(1) AS one FROM victims`);
      const r = await cli([command, '--audiences', dir], env());
      expect(r.code).toBe(2);
      expect(await victims()).toBe(5);
    }
  });

  it('a json value holding \\u0000 fails that member only', async () => {
    await f.t.db.query(`DROP TABLE IF EXISTS jnul; CREATE TABLE jnul (id text, o json); INSERT INTO jnul VALUES ('ok', '{"a": 1}'), ('nul', '{"a": "\\u0000"}')`);
    const dir = audienceDir({ jnul: `SELECT id AS external_id, o FROM jnul` });
    const r = await run(f.t.db, dir, { client: testClient(f.sandbox.url) });
    expect(r.exitCode).toBe(1);
    expect(f.sandbox.profile({ external_id: 'ok' })).toEqual({ o: { a: 1 } });
    expect(await failureReasonsByKey(r.audiences[0]!.runId!)).toEqual({ nul: expect.stringMatching(/o: JSON holds \\u0000/) });
  });

  it('a nested key longer than 255 characters fails its member', async () => {
    await f.t.db.query(`DROP TABLE IF EXISTS keys; CREATE TABLE keys (id text, o jsonb); INSERT INTO keys VALUES ('long', jsonb_build_object('a', jsonb_build_object(repeat('k', 300), 1)))`);
    const dir = audienceDir({ keys: `SELECT id AS external_id, o FROM keys` });
    const r = await run(f.t.db, dir, { client: testClient(f.sandbox.url) });
    expect(await failureReasonsByKey(r.audiences[0]!.runId!)).toEqual({ long: expect.stringMatching(/nested key longer than 255/) });
  });

  it('the cheap tests in front of the exact checks never let a bad value through, nor stop a good one', async () => {
    await f.t.db.query(`DROP TABLE IF EXISTS edges; CREATE TABLE edges (id text, s text, tags text[], o jsonb)`);
    await f.t.db.query(`INSERT INTO edges VALUES
      ('s255', repeat('a', 255), NULL, NULL), ('s256', repeat('a', 256), NULL, NULL),
      ('accents', repeat('é', 200), NULL, NULL), ('emoji255', repeat('😀', 127) || 'a', NULL, NULL), ('emoji256', repeat('😀', 128), NULL, NULL),
      ('tags300', NULL, ARRAY[repeat('x', 100), repeat('y', 100), repeat('z', 100)], NULL),
      ('tagaccents', NULL, ARRAY[repeat('é', 200), 'b'], NULL), ('tagemoji', NULL, ARRAY['a', repeat('😀', 128)], NULL),
      ('spacekey', NULL, NULL, '{"a b": 1}'), ('values', NULL, NULL, '{"k": "a b. $", "n": 1.5, "q": "x\\": y"}'),
      ('quotekey', NULL, NULL, '{"k\\": v": 1}'), ('inlist', NULL, NULL, '{"l": [{"a": 1}, {"b c": 2}]}'),
      ('time', NULL, NULL, '{"when": {"$time": "2024-01-01"}}'), ('key255', NULL, NULL, jsonb_build_object(repeat('k', 255), 1)),
      ('key256', NULL, NULL, jsonb_build_object('x', jsonb_build_object(repeat('k', 256), 1))),
      ('commakey', NULL, NULL, '{"k, ": "v"}'), ('commanested', NULL, NULL, '{"x": {"k, ": "v"}}'), ('commalast', NULL, NULL, '{"a": 1, "b, ": "c"}'),
      ('colonkey', NULL, NULL, '{"k: ": "v"}')`);
    const dir = audienceDir({ edges: `SELECT id AS external_id, s, tags, o FROM edges` });
    const r = await run(f.t.db, dir, { client: testClient(f.sandbox.url) });
    const failed = await failureReasonsByKey(r.audiences[0]!.runId!);
    expect(failed).toEqual({
      s256: expect.stringMatching(/s: longer than 255/),
      emoji256: expect.stringMatching(/s: longer than 255/),
      tagemoji: expect.stringMatching(/tags: array element longer than 255/),
      spacekey: expect.stringMatching(/o: nested key with a space/),
      quotekey: expect.stringMatching(/o: nested key with a space/),
      inlist: expect.stringMatching(/o: nested key with a space/),
      key256: expect.stringMatching(/o: nested key longer than 255/),
      commakey: expect.stringMatching(/o: nested key with a space/),
      commanested: expect.stringMatching(/o: nested key with a space/),
      commalast: expect.stringMatching(/o: nested key with a space/),
      colonkey: expect.stringMatching(/o: nested key with a space/),
    });
    for (const id of ['s255', 'accents', 'emoji255', 'tags300', 'tagaccents', 'values', 'time', 'key255']) expect(f.sandbox.profile({ external_id: id }), id).toBeDefined();
  });

  it('a member whose email now appears twice, differing in case, is held back, not exited', async () => {
    await f.t.db.query(`DROP TABLE IF EXISTS people_mail; CREATE TABLE people_mail (mail text, tier text); INSERT INTO people_mail VALUES ('ann@x.com', 'a')`);
    const dir = audienceDir({ mails2: `SELECT mail AS email, tier FROM people_mail` });
    await run(f.t.db, dir, { client: testClient(f.sandbox.url) });
    await f.t.db.query(`DELETE FROM people_mail; INSERT INTO people_mail VALUES ('Ann@x.com', 'a'), ('ANN@x.com', 'b')`);
    const mark = f.sandbox.requests.length;
    const r = await run(f.t.db, dir, { client: testClient(f.sandbox.url) });
    expect(r.audiences[0]!.counts.exited).toBe(0);
    expect(f.sandbox.requests.length).toBe(mark);
    expect(f.sandbox.profile({ email: 'ann@x.com' })).toEqual({ tier: 'a' });
  });

  it('a header after a block comment or after SQL on its line is refused; a comment after a header value is allowed', () => {
    expect(loadError('/* owner: crm */ -- @identifier email\nSELECT 1 AS email')).toMatch(/header line below the query is ignored/);
    expect(loadError('SELECT 1 AS external_id -- @on_exit keep')).toMatch(/header line below the query is ignored/);
    const { file } = oneFile('c', '-- @on_exit keep -- see ticket 42\nSELECT 1 AS external_id');
    expect(loadAudience(file).onExit).toEqual({ kind: 'keep' });
  });
});
