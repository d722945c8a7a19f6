import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeEach, describe, expect, it, onTestFinished } from 'vitest';
import { useDatabaseAndSandbox } from './helpers/fixture.js';
import { audienceDir, run, testClient, writeAudiences } from './helpers/audiences.js';

const f = useDatabaseAndSandbox();

async function reset(rows: number) {
  await f.t.db.query(`DROP TABLE IF EXISTS people; CREATE TABLE people (id text PRIMARY KEY, tier text, score int, active boolean)`);
  await f.t.db.query(`INSERT INTO people SELECT 'p' || i, 'silver', i, true FROM generate_series(1, $1::int) i`, [rows]);
  await f.t.db.query(`TRUNCATE braze_bridge.snapshots, braze_bridge.runs, braze_bridge.audiences CASCADE`);
  f.sandbox.reset();
}

const sentSince = (n: number) => f.sandbox.requests.slice(n).flatMap((r) => r.attributes);
const QUERY = `SELECT id AS external_id, tier, score FROM people WHERE active`;

describe('deltas', () => {
  beforeEach(() => reset(10));

  it('a key repeated in a later run (few candidates) is held back, neither sent nor exited; identical copies of an unchanged member change nothing', async () => {
    await reset(40);
    const dir = audienceDir({ aud: `SELECT id AS external_id, tier, score FROM people WHERE active UNION ALL SELECT id, tier, score FROM people_extra` });
    await f.t.db.query(`DROP TABLE IF EXISTS people_extra; CREATE TABLE people_extra (id text, tier text, score int)`);
    expect((await run(f.t.db, dir, { client: testClient(f.sandbox.url) })).audiences[0]!.counts).toMatchObject({ new: 40, failed: 0 });
    // p5 now has a second, different row; p6 an identical copy of its unchanged row; p7 changed.
    await f.t.db.query(`INSERT INTO people_extra VALUES ('p5', 'gold', 5), ('p6', 'silver', 6); UPDATE people SET tier = 'gold' WHERE id = 'p7'`);
    const mark = f.sandbox.requests.length;
    const second = await run(f.t.db, dir, { client: testClient(f.sandbox.url) });
    expect(second.audiences[0]!.counts).toMatchObject({ changed: 1, exited: 0, failed: 1 });
    expect(sentSince(mark)).toEqual([{ external_id: 'p7', _update_existing_only: false, tier: 'gold' }]);
    expect(f.sandbox.profile({ external_id: 'p5' })).toEqual({ tier: 'silver', score: 5 });
    const { rows } = await f.t.db.query(`SELECT member_key, reason FROM braze_bridge.member_failures WHERE run_id = $1`, [second.audiences[0]!.runId]);
    expect(rows).toEqual([{ member_key: 'p5', reason: 'identifier appears in 2 rows of the result' }]);
  });

  it('a first sync sends and records every member between repeated and missing keys, in key order, and a second run sends nothing', async () => {
    await f.t.db.query(`DROP TABLE IF EXISTS people_extra; CREATE TABLE people_extra (id text, tier text, score int)`);
    // p3 twice with different rows, p7 an identical copy, two rows without a key: none is a member to send.
    await f.t.db.query(`INSERT INTO people_extra VALUES ('p3', 'gold', 33), ('p7', 'silver', 7), (NULL, 'x', 1), ('', 'x', 2)`);
    const dir = audienceDir({ aud: `${QUERY} UNION ALL SELECT id, tier, score FROM people_extra` });
    const first = await run(f.t.db, dir, { client: testClient(f.sandbox.url), batchSize: 2 });
    expect(first.audiences[0]!.counts).toMatchObject({ new: 8, failed: 4, updates: 16 });
    const sent = f.sandbox.requests.flatMap((r) => r.attributes.map((a) => a.external_id));
    expect(sent).toEqual(['p1', 'p10', 'p2', 'p4', 'p5', 'p6', 'p8', 'p9']);
    const { rows } = await f.t.db.query(`SELECT member_key, row_hash IS NOT NULL AS hashed, attrs::jsonb AS attrs FROM braze_bridge.snapshots WHERE audience = 'aud' ORDER BY member_key`);
    expect(rows.map((r) => r.member_key)).toEqual(['p1', 'p10', 'p2', 'p4', 'p5', 'p6', 'p8', 'p9']);
    expect(rows.every((r) => r.hashed)).toBe(true);
    expect(rows[1]!.attrs).toEqual({ tier: 'silver', score: 10 });
    const failures = await f.t.db.query(`SELECT member_key, reason FROM braze_bridge.member_failures WHERE run_id = $1 ORDER BY member_key NULLS LAST`, [first.audiences[0]!.runId]);
    expect(failures.rows).toEqual([
      { member_key: 'p3', reason: 'identifier appears in 2 rows of the result' },
      { member_key: 'p7', reason: 'identifier appears in 2 rows of the result' },
      { member_key: null, reason: '2 row(s) with a NULL or empty external_id were skipped' },
    ]);
    const mark = f.sandbox.requests.length;
    expect((await run(f.t.db, dir, { client: testClient(f.sandbox.url) })).audiences[0]!.counts).toMatchObject({ new: 0, changed: 0, unchanged: 8 });
    expect(f.sandbox.requests.length).toBe(mark);
  });

  it("an audience reading the user's own tables named like the planning tables reads those, on a first sync and after", async () => {
    await f.t.db.query(`DROP TABLE IF EXISTS bb_delta, bb_dups, bb_cand;
      CREATE TABLE bb_delta (member_key text, v int); INSERT INTO bb_delta VALUES ('m1', 1), ('m2', 2);
      CREATE TABLE bb_dups (id text, w int); INSERT INTO bb_dups VALUES ('m1', 10), ('m2', 20);
      CREATE TABLE bb_cand (id text); INSERT INTO bb_cand VALUES ('m1'), ('m2')`);
    onTestFinished(() => f.t.db.query('DROP TABLE IF EXISTS bb_delta, bb_dups, bb_cand').then(() => {}));
    const dir = audienceDir({ aud: `SELECT d.member_key AS external_id, d.v, u.w FROM bb_delta d JOIN bb_dups u ON u.id = d.member_key JOIN bb_cand c ON c.id = d.member_key` });
    expect((await run(f.t.db, dir, { client: testClient(f.sandbox.url) })).audiences[0]!.counts).toMatchObject({ new: 2, failed: 0 });
    expect(f.sandbox.profile({ external_id: 'm2' })).toEqual({ v: 2, w: 20 });
    await f.t.db.query(`UPDATE bb_delta SET v = 3 WHERE member_key = 'm2'`);
    expect((await run(f.t.db, dir, { client: testClient(f.sandbox.url) })).audiences[0]!.counts).toMatchObject({ changed: 1, unchanged: 1, failed: 0 });
    expect(f.sandbox.profile({ external_id: 'm2' })).toEqual({ v: 3, w: 20 });
  });

  it('sends new members in full, then only changed attributes, then unsets exited members', async () => {
    const dir = audienceDir({ aud: QUERY });
    const first = await run(f.t.db, dir, { client: testClient(f.sandbox.url) });
    expect(first.audiences[0]!.counts).toMatchObject({ new: 10, changed: 0, exited: 0, updates: 20 });

    await f.t.db.query(`UPDATE people SET tier = 'gold' WHERE id = 'p1'; UPDATE people SET active = false WHERE id = 'p2'`);
    await f.t.db.query(`INSERT INTO people VALUES ('p99', NULL, 5, true)`);
    const mark = f.sandbox.requests.length;
    const second = await run(f.t.db, dir, { client: testClient(f.sandbox.url) });
    expect(second.audiences[0]!.counts).toMatchObject({ new: 1, changed: 1, exited: 1, unchanged: 8, updates: 4 });
    expect(sentSince(mark)).toEqual(
      expect.arrayContaining([
        { external_id: 'p1', _update_existing_only: false, tier: 'gold' },
        { external_id: 'p2', _update_existing_only: false, tier: null, score: null },
        { external_id: 'p99', _update_existing_only: false, score: 5 },
      ]),
    );
    expect(sentSince(mark)).toHaveLength(3);
    expect(f.sandbox.profile({ external_id: 'p2' })).toEqual({});
    const { rows } = await f.t.db.query(`SELECT count(*)::int AS n FROM braze_bridge.snapshots WHERE audience = 'aud'`);
    expect(rows[0]).toEqual({ n: 10 });
  });

  it('@on_exit keep sends nothing for an exit, and a JSON object sets those values', async () => {
    const dir = audienceDir({
      kept: `-- @on_exit keep\n${QUERY}`,
      flagged: `-- @on_exit {"in_audience": false, "points": null}\nSELECT id AS external_id, true AS in_audience, score * 10 AS points FROM people WHERE active`,
    });
    await run(f.t.db, dir, { client: testClient(f.sandbox.url) });
    await f.t.db.query(`UPDATE people SET active = false WHERE id = 'p3'`);
    const mark = f.sandbox.requests.length;
    const summary = await run(f.t.db, dir, { client: testClient(f.sandbox.url) });
    expect(summary.audiences.map((a) => [a.audience, a.counts.exited])).toEqual([
      ['flagged', 1],
      ['kept', 1],
    ]);
    expect(sentSince(mark)).toEqual([{ external_id: 'p3', _update_existing_only: false, in_audience: false, points: null }]);
    expect(f.sandbox.profile({ external_id: 'p3' })).toEqual({ tier: 'silver', score: 3, in_audience: false });
    // p3 comes back: compared with what Braze still holds, only what differs is sent (keep left
    // tier and score in place; the JSON exit set in_audience false and unset points).
    await f.t.db.query(`UPDATE people SET active = true WHERE id = 'p3'`);
    const back = f.sandbox.requests.length;
    const again = await run(f.t.db, dir, { client: testClient(f.sandbox.url) });
    expect(again.audiences.map((a) => a.counts.new)).toEqual([1, 1]);
    expect(sentSince(back)).toEqual([{ external_id: 'p3', _update_existing_only: false, in_audience: true, points: 30 }]);
    expect(f.sandbox.profile({ external_id: 'p3' })).toEqual({ tier: 'silver', score: 3, in_audience: true, points: 30 });
  });

  it('re-entry after keep unsets what is now NULL and sends nothing unchanged', async () => {
    const dir = audienceDir({ kept: `-- @on_exit keep\n${QUERY}` });
    await run(f.t.db, dir, { client: testClient(f.sandbox.url) });
    await f.t.db.query(`UPDATE people SET active = false WHERE id = 'p4'`);
    await run(f.t.db, dir, { client: testClient(f.sandbox.url) });
    // Still in Braze after the exit, and still in the snapshot, as not present.
    const held = await f.t.db.query(`SELECT present, attrs FROM braze_bridge.snapshots WHERE member_key = 'p4'`);
    expect(held.rows).toEqual([{ present: false, attrs: { tier: 'silver', score: 4 } }]);
    await f.t.db.query(`UPDATE people SET active = true, tier = NULL WHERE id = 'p4'`);
    const mark = f.sandbox.requests.length;
    const summary = await run(f.t.db, dir, { client: testClient(f.sandbox.url) });
    expect(summary.audiences[0]!.counts).toMatchObject({ new: 1, updates: 1 });
    expect(sentSince(mark)).toEqual([{ external_id: 'p4', _update_existing_only: false, tier: null }]);
    expect(f.sandbox.profile({ external_id: 'p4' })).toEqual({ score: 4 });
  });

  it('identifies by user_alias, email and braze_id; braze ids and aliases only ever update', async () => {
    await f.t.db.query(`CREATE TABLE IF NOT EXISTS leads (name text, label text, mail text, bid text)`);
    await f.t.db.query(`TRUNCATE leads; INSERT INTO leads VALUES ('n1', 'crm', 'a@example.com', 'unknown-braze-id')`);
    const dir = audienceDir({
      alias: `-- @update_existing_only false\nSELECT name AS alias_name, label AS alias_label, 'x' AS source FROM leads`,
      by_email: `SELECT mail AS email, 'y' AS source2 FROM leads`,
      by_braze: `SELECT bid AS braze_id, 'z' AS source3 FROM leads`,
    });
    const mark = f.sandbox.requests.length;
    const summary = await run(f.t.db, dir, { client: testClient(f.sandbox.url) });
    expect(summary.exitCode).toBe(0);
    expect(f.sandbox.profile({ user_alias: { alias_name: 'n1', alias_label: 'crm' } })).toEqual({ source: 'x' });
    expect(f.sandbox.profile({ email: 'a@example.com' })).toEqual({ source2: 'y' });
    // A braze_id that matches no profile: Braze ignores the object and still answers 201.
    expect(sentSince(mark)).toContainEqual({ braze_id: 'unknown-braze-id', _update_existing_only: true, source3: 'z' });
    expect(f.sandbox.ignored).toBe(1);
    // Once the id is the real profile's, the same audience reaches it.
    const brazeId = f.sandbox.profiles.find({ email: 'a@example.com' })!.braze_id;
    await f.t.db.query(`UPDATE leads SET bid = $1`, [brazeId]);
    await run(f.t.db, dir, { client: testClient(f.sandbox.url) });
    expect(f.sandbox.profile({ email: 'a@example.com' })).toEqual({ source2: 'y', source3: 'z' });
  });

  it('changing @identifier exits the old keys first, then enters the new ones, even on one profile', async () => {
    await f.t.db.query(`ALTER TABLE people ADD COLUMN mail text; UPDATE people SET mail = id || '@example.com'`);
    const dir = audienceDir({ aud: `SELECT id AS external_id, mail AS email, tier FROM people WHERE active` });
    await run(f.t.db, dir, { client: testClient(f.sandbox.url), names: ['aud'] });
    // The same people, now keyed by email: the old keys exit (tier unset), the new ones enter
    // (tier set) on the very same profiles. Sent in the other order, tier would end up unset.
    writeAudiences(dir, { aud: `-- @identifier email\nSELECT id AS external_id_text, mail AS email, tier FROM people WHERE active` });
    const summary = await run(f.t.db, dir, { client: testClient(f.sandbox.url), concurrency: 8, batchSize: 1 });
    expect(summary.audiences[0]!.counts).toMatchObject({ new: 10, exited: 10, failed: 0 });
    const order = f.sandbox.requests.slice(-20).map((r) => (r.attributes[0]!.external_id ? 'exit' : 'entry'));
    expect(order).toEqual([...Array(10).fill('exit'), ...Array(10).fill('entry')]);
    // The exit never unsets the standard field email: it is the person's, not the audience's.
    expect(f.sandbox.profile({ external_id: 'p1' })).toEqual({ email: 'p1@example.com', external_id_text: 'p1', tier: 'silver' });
    expect(f.sandbox.profile({ email: 'p1@example.com' })).toEqual({ external_id_text: 'p1', tier: 'silver' });
  });
});

describe('guardrail, dry run and backfill', () => {
  beforeEach(() => reset(20));

  it('stops before sending when too many existing members would change, unless --force', async () => {
    const dir = audienceDir({ aud: QUERY });
    await run(f.t.db, dir, { client: testClient(f.sandbox.url) }); // the first run is exempt
    await f.t.db.query(`UPDATE people SET active = false WHERE score <= 11`); // 11 of 20 exit
    const mark = f.sandbox.requests.length;
    const stopped = await run(f.t.db, dir, { client: testClient(f.sandbox.url), minChangeCount: 5 });
    expect(stopped.exitCode).toBe(4);
    expect(stopped.audiences[0]!.error).toMatch(/11 member\(s\) would leave \(55\.0% of 20 existing members, over --max-change-ratio 0\.5\); nothing was sent.*--force/);
    expect(f.sandbox.requests.length).toBe(mark);
    const { rows } = await f.t.db.query(`SELECT status FROM braze_bridge.runs ORDER BY id DESC LIMIT 1`);
    expect(rows[0]).toEqual({ status: 'aborted' });
    const forced = await run(f.t.db, dir, { client: testClient(f.sandbox.url), minChangeCount: 5, force: true });
    expect(forced.exitCode).toBe(0);
    expect(forced.audiences[0]!.counts.exited).toBe(11);
  });

  it('a column dropped from the query is unset for every member holding it, a value gone NULL too, and both count as changes Braze holds', async () => {
    const dir = audienceDir({ aud: QUERY });
    await run(f.t.db, dir, { client: testClient(f.sandbox.url) });
    writeAudiences(dir, { aud: `SELECT id AS external_id, score FROM people WHERE active` });
    await f.t.db.query(`UPDATE people SET score = NULL WHERE id = 'p2'; UPDATE people SET score = 30 WHERE id = 'p3'`);
    const mark = f.sandbox.requests.length;
    const second = await run(f.t.db, dir, { client: testClient(f.sandbox.url), force: true });
    // Every member changes (tier unset); p2 also loses score, p3 gets a new one.
    expect(second.audiences[0]!.counts).toMatchObject({ changed: 20, valueChanges: 20, updates: 22, failed: 0 });
    const sent = sentSince(mark);
    expect(sent.find((a) => a.external_id === 'p1')).toEqual({ external_id: 'p1', _update_existing_only: false, tier: null });
    expect(sent.find((a) => a.external_id === 'p2')).toEqual({ external_id: 'p2', _update_existing_only: false, score: null, tier: null });
    expect(sent.find((a) => a.external_id === 'p3')).toEqual({ external_id: 'p3', _update_existing_only: false, score: 30, tier: null });
    expect(f.sandbox.profile({ external_id: 'p2' })).toEqual({});
    expect(f.sandbox.profile({ external_id: 'p3' })).toEqual({ score: 30 });
    // What the snapshot now holds is compared next time: nothing more to send.
    const third = await run(f.t.db, dir, { client: testClient(f.sandbox.url) });
    expect(third.audiences[0]!.counts).toMatchObject({ changed: 0, unchanged: 20, updates: 0 });
  });

  it('a first plan counts each attribute of new members exactly, NULLs left out, as delivery then counts what Braze accepted', async () => {
    await f.t.db.query(`UPDATE people SET tier = NULL WHERE score % 3 = 0; UPDATE people SET score = NULL WHERE id IN ('p1', 'p2')`);
    const dir = audienceDir({ aud: QUERY });
    const plan = await run(f.t.db, dir, { mode: 'plan' });
    // 20 people. tier: all but the 6 whose score divides by 3; score: all but p1 and p2.
    expect(plan.audiences[0]!.counts).toMatchObject({ new: 20, plannedUpdates: 32, plannedPerAttribute: { tier: 14, score: 18 } });
    const synced = await run(f.t.db, dir, { client: testClient(f.sandbox.url) });
    expect(synced.audiences[0]!.counts).toMatchObject({ updates: 32, perAttribute: { tier: 14, score: 18 }, plannedPerAttribute: { tier: 14, score: 18 } });
    expect(f.sandbox.profile({ external_id: 'p3' })).toEqual({ score: 3 });
    expect(f.sandbox.profile({ external_id: 'p1' })).toEqual({ tier: 'silver' });
  });

  it('plan counts per attribute, writes the exact bodies, and changes nothing', async () => {
    const dir = audienceDir({ aud: QUERY });
    await run(f.t.db, dir, { client: testClient(f.sandbox.url) });
    await f.t.db.query(`UPDATE people SET tier = 'gold' WHERE score <= 3; UPDATE people SET active = false WHERE id = 'p20'`);
    const snapshotBefore = await f.t.db.query(`SELECT * FROM braze_bridge.snapshots ORDER BY member_key`);
    const runsBefore = await f.t.db.query(`SELECT count(*)::int AS n FROM braze_bridge.runs`);
    const mark = f.sandbox.requests.length;
    const out = join(dir, 'plan.ndjson');
    const plan = await run(f.t.db, dir, { mode: 'plan', outFile: out, batchSize: 2 });
    expect(plan.audiences[0]!.status).toBe('planned');
    expect(plan.audiences[0]!.counts).toMatchObject({ new: 0, changed: 3, exited: 1, unchanged: 16, updates: 0, plannedUpdates: 5, plannedPerAttribute: { tier: 4, score: 1 } });
    const bodies = readFileSync(out, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    // Exits first, in batches of their own.
    expect(bodies.map((b) => b.attributes.length)).toEqual([1, 2, 1]);
    expect(bodies[0].attributes).toEqual([{ external_id: 'p20', _update_existing_only: false, tier: null, score: null }]);
    expect(f.sandbox.requests.length).toBe(mark);
    expect((await f.t.db.query(`SELECT * FROM braze_bridge.snapshots ORDER BY member_key`)).rows).toEqual(snapshotBefore.rows);
    expect((await f.t.db.query(`SELECT count(*)::int AS n FROM braze_bridge.runs`)).rows).toEqual(runsBefore.rows);
  });

  it('backfill resends every member in full and records that as the snapshot', async () => {
    const dir = audienceDir({ aud: QUERY });
    await run(f.t.db, dir, { client: testClient(f.sandbox.url) });
    f.sandbox.profiles.clear(); // e.g. the profiles were wiped on the Braze side
    const summary = await run(f.t.db, dir, { client: testClient(f.sandbox.url), mode: 'backfill' });
    expect(summary.audiences[0]!.counts).toMatchObject({ unchanged: 20, updates: 40 });
    expect(f.sandbox.profiles.size).toBe(20);
    const after = await run(f.t.db, dir, { client: testClient(f.sandbox.url) });
    expect(after.audiences[0]!.counts.updates).toBe(0);
  });
});
