/**
 * Braze holds exactly what the audiences say, over a member's and an audience's whole life:
 * enter, change, leave under each @on_exit, come back with NULLs, a profile created later, an
 * audience deleted and retired, a file moved, a shared attribute. The Braze stand-in is strict
 * (one profile reachable by several identifiers, update-only objects for unknown users ignored
 * with a 201, standard fields apart from custom attributes), and each test checks what Braze
 * ends up holding against the SQL, and the data points against the minimum.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeEach, describe, expect, it } from 'vitest';
import { useDatabaseAndSandbox } from './helpers/fixture.js';
import { audienceDir, run, testClient, writeAudiences } from './helpers/audiences.js';
import { cli } from './helpers/cli.js';

const f = useDatabaseAndSandbox();

beforeEach(async () => {
  await f.t.db.query(`DROP TABLE IF EXISTS people; CREATE TABLE people (id text PRIMARY KEY, first_name text, tier text, score int, active boolean)`);
  await f.t.db.query(`INSERT INTO people SELECT 'p' || i, 'Ann' || i, 'silver', i, true FROM generate_series(1, 10) i`);
  await f.t.db.query(`TRUNCATE braze_bridge.snapshots, braze_bridge.runs, braze_bridge.audiences CASCADE`);
  f.sandbox.reset();
  f.sandbox.faults = undefined;
});

const client = () => testClient(f.sandbox.url);
const sentSince = (n: number) => f.sandbox.requests.slice(n).flatMap((r) => r.attributes);
const dataPoints = () => [...f.sandbox.updatesByProfile.values()].reduce((a, b) => a + b, 0);

/** What Braze should hold for every active person: the audience's columns, NULLs left out. */
async function expectBrazeHoldsTheQuery(columns: string[]): Promise<void> {
  const { rows } = await f.t.db.query<Record<string, unknown>>(`SELECT id, ${columns.join(', ')} FROM people WHERE active ORDER BY id`);
  for (const row of rows) {
    const expected = Object.fromEntries(columns.map((c) => [c, row[c]]).filter(([, v]) => v !== null));
    expect(f.sandbox.profile({ external_id: row.id }), String(row.id)).toEqual(expect.objectContaining(expected));
    for (const c of columns) if (row[c] === null) expect(f.sandbox.profile({ external_id: row.id })).not.toHaveProperty(c);
  }
}

describe('a member over its whole life', () => {
  it('@on_exit unset clears custom attributes only; the standard fields stay, and a return sends only what differs', async () => {
    const dir = audienceDir({ vip: `SELECT id AS external_id, first_name, tier, score FROM people WHERE active` });
    await run(f.t.db, dir, { client: client() });
    expect(dataPoints()).toBe(30); // 10 members × 3 attributes: the minimum

    await f.t.db.query(`UPDATE people SET active = false WHERE id = 'p1'`);
    let mark = f.sandbox.requests.length;
    await run(f.t.db, dir, { client: client() });
    expect(sentSince(mark)).toEqual([{ external_id: 'p1', _update_existing_only: false, tier: null, score: null }]);
    expect(f.sandbox.profile({ external_id: 'p1' })).toEqual({ first_name: 'Ann1' });

    // Back, with a NULL tier: first_name is still in Braze, so only score goes out.
    await f.t.db.query(`UPDATE people SET active = true, tier = NULL WHERE id = 'p1'`);
    mark = f.sandbox.requests.length;
    const back = await run(f.t.db, dir, { client: client() });
    expect(back.audiences[0]!.counts).toMatchObject({ new: 1, updates: 1 });
    expect(sentSince(mark)).toEqual([{ external_id: 'p1', _update_existing_only: false, score: 1 }]);
    await expectBrazeHoldsTheQuery(['first_name', 'tier', 'score']);
    expect(dataPoints()).toBe(30 + 2 + 1);
  });

  it('under @update_existing_only true a profile that appears later still gets its attributes, and the wait is reported', async () => {
    const dir = audienceDir({ known: `-- @update_existing_only true\nSELECT id AS external_id, tier FROM people WHERE active` });
    for (const id of ['p1', 'p2']) f.sandbox.profiles.create({ external_id: id });
    const first = await run(f.t.db, dir, { client: client() });
    expect(first.audiences[0]!.counts).toMatchObject({ new: 10, unverified: 10 });
    expect(f.sandbox.ignored).toBe(8); // Braze answered 201 for all ten
    expect(f.sandbox.profile({ external_id: 'p1' })).toEqual({ tier: 'silver' });
    expect(f.sandbox.profile({ external_id: 'p3' })).toBeUndefined();

    // p3's profile is created by the app; the next run sends to the members not known to exist.
    f.sandbox.profiles.create({ external_id: 'p3' });
    const mark = f.sandbox.requests.length;
    const second = await run(f.t.db, dir, { client: client() });
    expect(second.audiences[0]!.counts).toMatchObject({ unchanged: 10, unverified: 10 });
    expect(sentSince(mark)).toHaveLength(10);
    expect(f.sandbox.profile({ external_id: 'p3' })).toEqual({ tier: 'silver' });
  });

  it('without @update_existing_only, members are created (Braze\'s default for external ids), once', async () => {
    const dir = audienceDir({ all: `SELECT id AS external_id, tier FROM people WHERE active` });
    const first = await run(f.t.db, dir, { client: client() });
    expect(first.audiences[0]!.counts).toMatchObject({ new: 10, unverified: 0, updates: 10 });
    expect(f.sandbox.profiles.size).toBe(10);
    const again = await run(f.t.db, dir, { client: client() });
    expect(again.audiences[0]!.counts.requests).toBe(0);
  });
});

describe('an audience over its whole life', () => {
  it('two audiences writing one attribute are both refused, naming the files and the attribute; the others run', async () => {
    const dir = audienceDir({
      a: `SELECT id AS external_id, tier FROM people`,
      b: `SELECT id AS external_id, tier, score FROM people`,
      c: `SELECT id AS external_id, score * 2 AS doubled FROM people`,
    });
    const summary = await run(f.t.db, dir, { client: client() });
    expect(summary.exitCode).toBe(2);
    const byName = Object.fromEntries(summary.audiences.map((a) => [a.audience, a]));
    expect(byName.a!.status).toBe('failed');
    expect(byName.a!.error).toMatch(new RegExp(`a\\.sql: attribute "tier" is also written by b \\(${join(dir, 'b.sql').replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}\\)`));
    expect(byName.b!.error).toMatch(/b\.sql: attribute "tier" is also written by a /);
    expect(byName.c!.status).toBe('succeeded');
    // An @on_exit key is an attribute the audience writes too.
    const dir2 = audienceDir({ d: `-- @on_exit {"doubled": null}\nSELECT id AS external_id, tier FROM people`, e: `SELECT id AS external_id, score * 2 AS doubled FROM people` });
    const second = await run(f.t.db, dir2, { client: client(), schema: 'braze_bridge' });
    expect(second.audiences.every((a) => a.status === 'failed')).toBe(true);
  });

  it('a deleted audience is reported every run, and retire applies its @on_exit to every member, then forgets it', async () => {
    const dir = audienceDir({ gone: `SELECT id AS external_id, first_name, tier, score FROM people WHERE active`, stays: `SELECT id AS external_id, active FROM people` });
    await run(f.t.db, dir, { client: client() });
    rmSync(join(dir, 'gone.sql'));
    const warned = await run(f.t.db, dir, { client: client() });
    expect(warned.orphans).toEqual([{ name: 'gone', members: 10, file: join(dir, 'gone.sql') }]);

    const env = f.env;
    const mark = f.sandbox.requests.length;
    const plan = await cli(['retire', 'gone', '--audiences', dir, '--dry-run', '--json'], env);
    expect(plan.code).toBe(0);
    expect(JSON.parse(plan.stdout).audiences[0].counts).toMatchObject({ exited: 10, plannedUpdates: 20 });
    expect(f.sandbox.requests.length).toBe(mark);

    const retired = await cli(['retire', 'gone', '--audiences', dir, '--json'], env);
    expect(retired.code, retired.stderr).toBe(0);
    expect(JSON.parse(retired.stdout).audiences[0].counts).toMatchObject({ exited: 10, updates: 20 });
    // Custom attributes unset, the standard field left with the person.
    expect(f.sandbox.profile({ external_id: 'p5' })).toEqual({ first_name: 'Ann5', active: true });
    const left = await f.t.db.query(`SELECT count(*)::int AS n FROM braze_bridge.snapshots WHERE audience = 'gone'`);
    expect(left.rows[0]).toEqual({ n: 0 });
    const quiet = await run(f.t.db, dir, { client: client() });
    expect(quiet.orphans).toEqual([]);
    // Retiring what is unknown, or still has a file, is refused.
    expect((await cli(['retire', 'gone', '--audiences', dir], env)).code).toBe(2);
    const stillThere = await cli(['retire', 'stays', '--audiences', dir], env);
    expect(stillThere.code).toBe(2);
    expect(stillThere.stderr).toMatch(/stays\.sql still exists/);
  });

  it('the same audience from another path is refused, naming both paths, unless --adopt', async () => {
    const text = `SELECT id AS external_id, tier FROM people WHERE active`;
    const first = audienceDir({ moved: text });
    await run(f.t.db, first, { client: client() });
    const second = mkdtempSync(join(tmpdir(), 'bb-moved-'));
    writeFileSync(join(second, 'moved.sql'), text);
    const refused = await run(f.t.db, second, { client: client() });
    expect(refused.exitCode).toBe(2);
    expect(refused.audiences[0]!.error).toContain(join(first, 'moved.sql'));
    expect(refused.audiences[0]!.error).toContain(join(second, 'moved.sql'));
    expect(refused.audiences[0]!.error).toMatch(/--adopt/);
    const mark = f.sandbox.requests.length;
    const adopted = await run(f.t.db, second, { client: client(), adopt: true });
    expect(adopted.exitCode).toBe(0);
    expect(adopted.audiences[0]!.counts).toMatchObject({ unchanged: 10, requests: 0 });
    expect(f.sandbox.requests.length).toBe(mark);
    // Adopted: its new path is the one on record.
    expect((await run(f.t.db, second, { client: client() })).exitCode).toBe(0);
  });
});

describe('what counts, and when to stop', () => {
  it('an error Braze does not attribute to a member leaves the whole batch unconfirmed: partial, and sent again', async () => {
    const dir = audienceDir({ odd: `SELECT id AS external_id, tier FROM people` });
    f.sandbox.faults = ({ n }) => (n === 1 ? { rawErrors: [{ type: 'something went wrong' }] } : undefined);
    const first = await run(f.t.db, dir, { client: client() });
    expect(first.exitCode).toBe(1);
    expect(first.audiences[0]!.counts).toMatchObject({ failed: 10, updates: 0, plannedUpdates: 10 });
    expect((await f.t.db.query(`SELECT count(*)::int AS n FROM braze_bridge.snapshots`)).rows[0]).toEqual({ n: 0 });
    const second = await run(f.t.db, dir, { client: client() });
    expect(second.exitCode).toBe(0);
    expect(second.audiences[0]!.counts).toMatchObject({ new: 10, updates: 10 });
  });

  it('updates are what Braze accepted: an aborted run reports 0 sent and its planned updates apart', async () => {
    const dir = audienceDir({ denied: `SELECT id AS external_id, tier, score FROM people` });
    const summary = await run(f.t.db, dir, { client: testClient(f.sandbox.url, { apiKey: 'wrong-key-000000000000' }) });
    expect(summary.exitCode).toBe(4);
    expect(summary.audiences[0]!.counts).toMatchObject({ updates: 0, plannedUpdates: 20 });
    const { rows } = await f.t.db.query(`SELECT counts->>'updates' AS u, counts->>'plannedUpdates' AS p FROM braze_bridge.runs`);
    expect(rows).toEqual([{ u: '0', p: '20' }]);
  });

  it('the guardrail waits for --min-change-count, ignores new attributes, reads @max_change_ratio and names the likely cause', async () => {
    const dir = audienceDir({ small: `SELECT id AS external_id, tier FROM people WHERE active` });
    await run(f.t.db, dir, { client: client() });
    // 6 of 10 leave: over the ratio, but fewer than the 100 changes the guardrail waits for.
    await f.t.db.query(`UPDATE people SET active = false WHERE score <= 6`);
    expect((await run(f.t.db, dir, { client: client() })).exitCode).toBe(0);

    // A column added is no removal: every member changes, none trips the guardrail.
    await f.t.db.query(`UPDATE people SET active = true`);
    await run(f.t.db, dir, { client: client(), force: true });
    writeAudiences(dir, { small: `SELECT id AS external_id, tier, score FROM people WHERE active` });
    const added = await run(f.t.db, dir, { client: client(), minChangeCount: 0 });
    expect(added.exitCode).toBe(0);
    expect(added.audiences[0]!.counts).toMatchObject({ changed: 10, valueChanges: 0 });

    // A column dropped: a removal for everyone, and the message says which column.
    writeAudiences(dir, { small: `SELECT id AS external_id, tier FROM people WHERE active` });
    const dropped = await run(f.t.db, dir, { client: client(), minChangeCount: 0 });
    expect(dropped.exitCode).toBe(4);
    expect(dropped.audiences[0]!.error).toMatch(/10 would have values changed or removed .*Likely cause: column\(s\) score no longer in the query/);

    // The audience's own limit wins over --max-change-ratio.
    writeAudiences(dir, { small: `-- @max_change_ratio 1\nSELECT id AS external_id, tier FROM people WHERE active` });
    expect((await run(f.t.db, dir, { client: client(), minChangeCount: 0 })).exitCode).toBe(0);

    // The query returns nothing: every member would leave.
    await f.t.db.query(`UPDATE people SET active = false`);
    writeAudiences(dir, { small: `SELECT id AS external_id, tier FROM people WHERE active` });
    const empty = await run(f.t.db, dir, { client: client(), minChangeCount: 0 });
    expect(empty.audiences[0]!.error).toMatch(/10 member\(s\) would leave .*Likely cause: the query returned no members/);
  });

  it('backfill --dry-run plans the backfill, and an interrupted backfill resumes where it stopped', async () => {
    const dir = audienceDir({ full: `SELECT id AS external_id, tier, score FROM people` });
    await run(f.t.db, dir, { client: client() });
    const planned = await run(f.t.db, dir, { mode: 'backfill', dryRun: true });
    expect(planned.dryRun).toBe(true);
    expect(planned.audiences[0]!.counts).toMatchObject({ plannedUpdates: 20, updates: 0 });

    f.sandbox.reset(); // the profiles were wiped on the Braze side
    // The third request fails for good: the backfill stops with 4 of 10 members confirmed.
    f.sandbox.faults = ({ n }) => (n === 3 ? { status: 500 } : undefined);
    const stopped = await run(f.t.db, dir, { client: testClient(f.sandbox.url, { maxAttempts: 1 }), mode: 'backfill', batchSize: 2, concurrency: 1 });
    expect(stopped.exitCode).toBe(4);
    expect(f.sandbox.profiles.size).toBe(4);
    f.sandbox.faults = undefined;
    const mark = f.sandbox.requests.length;
    const resumed = await run(f.t.db, dir, { client: client(), mode: 'backfill' });
    expect(resumed.exitCode).toBe(0);
    expect(sentSince(mark)).toHaveLength(6); // only the members not confirmed since the backfill began
    await expectBrazeHoldsTheQuery(['tier', 'score']);
    // Finished: the next backfill starts over, for everyone.
    const next = await run(f.t.db, dir, { client: client(), mode: 'backfill', dryRun: true });
    expect(next.audiences[0]!.counts.plannedUpdates).toBe(20);
  });
});

describe('edges the review found', () => {
  it('an update-only member who leaves and comes back before its profile exists still gets its attributes', async () => {
    const dir = audienceDir({ waiting: `-- @update_existing_only true\n-- @on_exit keep\nSELECT id AS external_id, tier FROM people WHERE active` });
    await run(f.t.db, dir, { client: client() }); // no profile yet: Braze ignores every object
    await f.t.db.query(`UPDATE people SET active = false WHERE id = 'p5'`);
    await run(f.t.db, dir, { client: client() });
    f.sandbox.profiles.create({ external_id: 'p5' });
    await f.t.db.query(`UPDATE people SET active = true WHERE id = 'p5'`);
    await run(f.t.db, dir, { client: client() });
    expect(f.sandbox.profile({ external_id: 'p5' })).toEqual({ tier: 'silver' });
  });

  it('a backfill resumes with the members not backfilled yet, even when a sync ran in between', async () => {
    const dir = audienceDir({ full: `SELECT id AS external_id, tier, score FROM people` });
    await run(f.t.db, dir, { client: client() });
    f.sandbox.reset(); // wiped on the Braze side
    f.sandbox.faults = ({ n }) => (n === 2 ? { status: 500 } : undefined);
    await run(f.t.db, dir, { client: testClient(f.sandbox.url, { maxAttempts: 1 }), mode: 'backfill', batchSize: 2, concurrency: 1 });
    f.sandbox.faults = undefined;
    expect(f.sandbox.profiles.size).toBe(2);
    // A scheduled sync between the two: p7's tier changes and goes out as a delta only.
    await f.t.db.query(`UPDATE people SET tier = 'gold' WHERE id = 'p7'`);
    await run(f.t.db, dir, { client: client() });
    const resumed = await run(f.t.db, dir, { client: client(), mode: 'backfill' });
    expect(resumed.exitCode).toBe(0);
    await expectBrazeHoldsTheQuery(['tier', 'score']);
  });

  it('an unconfirmed exit under the audience\'s own identifier does not hold the entries back; under another one it does', async () => {
    const dir = audienceDir({ ex: `SELECT id AS external_id, tier FROM people WHERE active` });
    await run(f.t.db, dir, { client: client() });
    await f.t.db.query(`UPDATE people SET active = false WHERE id = 'p1'; UPDATE people SET tier = 'gold' WHERE id = 'p2'`);
    f.sandbox.faults = ({ attributes }) => (attributes.some((a) => a.external_id === 'p1') ? { itemErrors: [0] } : undefined);
    const same = await run(f.t.db, dir, { client: client() });
    expect(same.exitCode).toBe(1);
    expect(f.sandbox.profile({ external_id: 'p2' })).toEqual({ tier: 'gold' }); // sent

    // Now the identifier changes to email: the old external-id keys exit, the email keys enter.
    await f.t.db.query(`ALTER TABLE people ADD COLUMN mail text; UPDATE people SET mail = id || '@example.com', active = true`);
    f.sandbox.faults = undefined;
    await run(f.t.db, dir, { client: client() });
    writeAudiences(dir, { ex: `-- @identifier email\nSELECT mail AS email, tier FROM people WHERE active` });
    f.sandbox.faults = ({ attributes }) => (attributes.some((a) => a.external_id === 'p3') ? { itemErrors: attributes.map((_, i) => i) } : undefined);
    const mark = f.sandbox.requests.length;
    const cross = await run(f.t.db, dir, { client: client(), force: true });
    expect(cross.exitCode).toBe(1);
    expect(cross.audiences[0]!.error).toMatch(/exits were not confirmed/);
    expect(sentSince(mark).some((a) => a.email !== undefined)).toBe(false); // no entry went out
  });

  it('an unconfirmed exit of an email that an entry repeats in another case holds the entries back (one Braze profile)', async () => {
    await f.t.db.query(`ALTER TABLE people ADD COLUMN mail text; UPDATE people SET mail = id || '@example.com'`);
    const dir = audienceDir({ mails: `-- @identifier email\nSELECT mail AS email, tier FROM people WHERE active` });
    await run(f.t.db, dir, { client: client() });
    // p1's email changes case only: to Braze the same profile, so its exit (tier: null) must land first.
    // p2 leaves, p3 changes: neither reaches another member's profile.
    await f.t.db.query(`UPDATE people SET mail = 'P1@Example.com', tier = 'gold' WHERE id = 'p1'; UPDATE people SET active = false WHERE id = 'p2'; UPDATE people SET tier = 'bronze' WHERE id = 'p3'`);
    const refuse = (...emails: string[]) => ({ attributes }: { attributes: Array<Record<string, unknown>> }) => {
      const items = attributes.flatMap((a, i) => (emails.includes(String(a.email)) && a.tier === null ? [i] : []));
      return items.length > 0 ? { itemErrors: items } : undefined;
    };
    f.sandbox.faults = refuse('p1@example.com', 'p2@example.com');
    let mark = f.sandbox.requests.length;
    const held = await run(f.t.db, dir, { client: client() });
    expect(held.exitCode).toBe(1);
    expect(held.audiences[0]!.error).toMatch(/exits were not confirmed/);
    expect(sentSince(mark).filter((a) => a.tier !== null)).toEqual([]); // no entry or change went out

    // An unconfirmed exit of another email holds nothing back.
    f.sandbox.faults = refuse('p2@example.com');
    mark = f.sandbox.requests.length;
    const other = await run(f.t.db, dir, { client: client() });
    expect(other.exitCode).toBe(1);
    expect(other.audiences[0]!.error ?? '').not.toMatch(/exits were not confirmed/);
    expect(f.sandbox.profile({ email: 'p1@example.com' })).toMatchObject({ tier: 'gold' });
    expect(f.sandbox.profile({ email: 'p3@example.com' })).toMatchObject({ tier: 'bronze' });

    f.sandbox.faults = undefined;
    expect((await run(f.t.db, dir, { client: client() })).exitCode).toBe(0);
    expect(f.sandbox.profile({ email: 'p1@example.com' })).toMatchObject({ tier: 'gold' });
    expect(f.sandbox.profile({ email: 'p2@example.com' })).not.toHaveProperty('tier');
  });

  it('a success whose errors are not a list confirms nothing', async () => {
    const dir = audienceDir({ odd: `SELECT id AS external_id, tier FROM people` });
    f.sandbox.faults = ({ n }) => (n === 1 ? { rawErrors: 'something' as unknown as unknown[] } : undefined);
    const first = await run(f.t.db, dir, { client: client() });
    expect(first.exitCode).toBe(1);
    expect((await f.t.db.query(`SELECT count(*)::int AS n FROM braze_bridge.snapshots`)).rows[0]).toEqual({ n: 0 });
  });

  it('retire refuses an audience whose file lives in another folder, which is no orphan either', async () => {
    const a = audienceDir({ here: `SELECT id AS external_id, tier FROM people` });
    const b = audienceDir({ there: `SELECT id AS external_id, score FROM people` });
    await run(f.t.db, a, { client: client() });
    await run(f.t.db, b, { client: client() });
    const fromA = await run(f.t.db, a, { client: client() });
    expect(fromA.orphans).toEqual([]);
    const env = f.env;
    const r = await cli(['retire', 'there', '--audiences', a], env);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(join(b, 'there.sql'));
  });

  it('retire under a JSON @on_exit leaves members who left earlier alone: they were set when they left', async () => {
    const dir = audienceDir({ flags: `-- @on_exit {"in_flags": false}\nSELECT id AS external_id, true AS in_flags, tier FROM people WHERE active` });
    await run(f.t.db, dir, { client: client() });
    await f.t.db.query(`UPDATE people SET active = false WHERE id IN ('p1', 'p2')`);
    await run(f.t.db, dir, { client: client() }); // p1 and p2 leave: in_flags false
    expect(f.sandbox.profile({ external_id: 'p1' })).toEqual({ in_flags: false, tier: 'silver' });
    rmSync(join(dir, 'flags.sql'));
    const mark = f.sandbox.requests.length;
    const r = await cli(['retire', 'flags', '--audiences', dir, '--json'], f.env);
    expect(r.code, r.stderr).toBe(0);
    // The 8 still present exit; the 2 who left are not sent their @on_exit a second time.
    expect(JSON.parse(r.stdout).audiences[0].counts).toMatchObject({ exited: 8, updates: 8 });
    expect(sentSince(mark).map((a) => a.external_id).sort()).toEqual(['p10', 'p3', 'p4', 'p5', 'p6', 'p7', 'p8', 'p9']);
    expect(f.sandbox.profile({ external_id: 'p3' })).toEqual({ in_flags: false, tier: 'silver' });
  });

  it('retire under unset also clears what members who left under an earlier keep still hold', async () => {
    const dir = audienceDir({ old: `-- @on_exit keep\nSELECT id AS external_id, tier FROM people WHERE active` });
    await run(f.t.db, dir, { client: client() });
    await f.t.db.query(`UPDATE people SET active = false WHERE id = 'p1'`);
    await run(f.t.db, dir, { client: client() }); // p1 left; Braze keeps its tier
    writeAudiences(dir, { old: `-- @on_exit unset\nSELECT id AS external_id, tier FROM people WHERE active` });
    await run(f.t.db, dir, { client: client() });
    rmSync(join(dir, 'old.sql'));
    const env = f.env;
    const r = await cli(['retire', 'old', '--audiences', dir], env);
    expect(r.code, r.stderr).toBe(0);
    for (const id of ['p1', 'p2']) expect(f.sandbox.profile({ external_id: id })).toEqual({});
  });

  it('upgrading to json attributes keeps what jsonb held: nothing is resent, every value compares equal, a change sends only itself', async () => {
    const { migrate } = await import('../src/db/migrate.js');
    const schema = 'attrs_upgrade';
    await f.t.db.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await migrate(f.t.db, schema);
    // Every kind, with text forms that differ between jsonb's output and the JSON text built now
    // (numeric scale, float text, escapes, non-ASCII, nested objects, key order).
    await f.t.db.query(`DROP TABLE IF EXISTS kinds; CREATE TABLE kinds AS
      SELECT 'k' || i AS id, 12.50::numeric(6,2) + i AS ltv, 0.1::float8 * i AS ratio, 1.5e-7::float8 * i AS big,
             timestamptz '2026-01-02 03:04:05.678+00' + i * interval '1 hour' AS seen, date '2026-01-01' + i AS day,
             ARRAY['a"b', E'c\\\\d', 'é'] AS tags, jsonb_build_object('z', 1, 'nested', jsonb_build_object('x', i, 'y', E'é "q"\n')) AS prefs,
             i % 2 = 0 AS flag, E'Zoë "\t' || i AS name, i::bigint * 1000000000 AS n
        FROM generate_series(1, 5) i`);
    const dir = audienceDir({ kinds: `SELECT id AS external_id, ltv, ratio, big, seen, day, tags, prefs, flag, name, n FROM kinds` });
    await run(f.t.db, dir, { client: client(), schema });
    const held = new Map([1, 2, 3, 4, 5].map((i) => [`k${i}`, f.sandbox.profile({ external_id: `k${i}` })]));
    // The state as braze-bridge left it before migration 0009: attrs as jsonb, built as it built
    // them (jsonb_build_object of the values; dates and times through to_char), and every member
    // made a candidate (as verify --repair does), so each is compared value by value.
    await f.t.db.query(`ALTER TABLE ${schema}.snapshots ALTER COLUMN attrs TYPE jsonb USING attrs::jsonb; DELETE FROM ${schema}.migrations WHERE id = 9`);
    await f.t.db.query(`UPDATE ${schema}.snapshots s SET row_hash = NULL, attrs = jsonb_build_object('ltv', k.ltv, 'ratio', k.ratio, 'big', k.big,
        'seen', to_char(k.seen AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'), 'day', to_char(k.day, 'YYYY-MM-DD'), 'tags', k.tags, 'prefs', k.prefs,
        'flag', k.flag, 'name', k.name, 'n', k.n) FROM kinds k WHERE k.id = s.member_key`);
    await migrate(f.t.db, schema);
    const type = await f.t.db.query(`SELECT format_type(atttypid, atttypmod) AS t FROM pg_attribute WHERE attrelid = '${schema}.snapshots'::regclass AND attname = 'attrs'`);
    expect(type.rows).toEqual([{ t: 'json' }]);
    let mark = f.sandbox.requests.length;
    const again = await run(f.t.db, dir, { client: client(), schema });
    expect(again.audiences[0]!.counts).toMatchObject({ members: 5, unchanged: 5, changed: 0, new: 0 });
    expect(f.sandbox.requests.length).toBe(mark);
    // One value changes: only it goes out, and Braze holds what it held plus that change.
    await f.t.db.query(`UPDATE kinds SET ratio = 2.5 WHERE id = 'k2'`);
    mark = f.sandbox.requests.length;
    await run(f.t.db, dir, { client: client(), schema });
    expect(sentSince(mark)).toEqual([{ external_id: 'k2', _update_existing_only: false, ratio: 2.5 }]);
    expect(f.sandbox.profile({ external_id: 'k2' })).toEqual({ ...held.get('k2'), ratio: 2.5 });
    expect(f.sandbox.profile({ external_id: 'k3' })).toEqual(held.get('k3'));
    expect(held.get('k3')).toMatchObject({ ltv: 15.5, tags: ['a"b', 'c\\d', 'é'], prefs: { z: 1, nested: { x: 3, y: 'é "q"\n' } }, name: 'Zoë "\t3', n: 3000000000 });
    await f.t.db.query(`DROP SCHEMA ${schema} CASCADE; DROP TABLE kinds`);
  });

  it('upgrading keeps old update-only sends unverified and records each audience\'s attributes', async () => {
    const { migrate, loadMigrations } = await import('../src/db/migrate.js');
    await migrate(f.t.db, 'upgrade_state', undefined, loadMigrations().filter((m) => m.id <= 3));
    await f.t.db.query(`INSERT INTO upgrade_state.audiences (name, file, identifier, settings) VALUES
      ('only', '/x/only.sql', 'external_id', '{"updateExistingOnly": true, "onExit": {"kind": "set", "values": {"gone": false}}}'),
      ('create', '/x/create.sql', 'external_id', '{"updateExistingOnly": false, "onExit": {"kind": "unset"}}')`);
    await f.t.db.query(`INSERT INTO upgrade_state.snapshots (audience, identifier, member_key, attrs) VALUES
      ('only', 'external_id', 'a', '{"tier": "x"}'), ('create', 'external_id', 'a', '{"score": 1}')`);
    await migrate(f.t.db, 'upgrade_state');
    const snap = await f.t.db.query(`SELECT audience, unverified, present FROM upgrade_state.snapshots ORDER BY audience`);
    expect(snap.rows).toEqual([
      { audience: 'create', unverified: false, present: true },
      { audience: 'only', unverified: true, present: true },
    ]);
    const recorded = await f.t.db.query(`SELECT name, attributes FROM upgrade_state.audiences ORDER BY name`);
    expect(recorded.rows).toEqual([
      { name: 'create', attributes: ['score'] },
      { name: 'only', attributes: ['gone', 'tier'] },
    ]);
  });
});
