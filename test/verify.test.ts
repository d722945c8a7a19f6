import { beforeEach, describe, expect, it } from 'vitest';
import { BrazeSandbox } from '../src/braze/sandbox.js';
import { ExportClient } from '../src/braze/export-client.js';
import { RateLimiter } from '../src/http/rate-limiter.js';
import { silentLogger } from '../src/log.js';
import { verifyAudiences } from '../src/verify/verify-audiences.js';
import type { VerifyOptions } from '../src/verify/verify-audience.js';
import { compareProfile, sameValue } from '../src/verify/compare-profile.js';
import { useDatabaseAndSandbox } from './helpers/fixture.js';
import { audienceDir, fakeTime, run, testClient, TEST_KEY, type FakeTime } from './helpers/audiences.js';

const f = useDatabaseAndSandbox();

beforeEach(async () => {
  await f.t.db.query(`
    DROP TABLE IF EXISTS people;
    CREATE TABLE people (id text PRIMARY KEY, tier text, score numeric(6,2), seen timestamptz, tags text[]);
    INSERT INTO people SELECT 'p' || g, 'gold', g + 0.5, ('2026-01-0' || (1 + g % 9) || ' 10:00:00+00')::timestamptz, ARRAY['a', 'b'] FROM generate_series(1, 120) g;
    TRUNCATE braze_bridge.snapshots, braze_bridge.runs, braze_bridge.audiences CASCADE;
  `);
  f.sandbox.reset();
});

const VIP = `-- @identifier external_id\nSELECT id AS external_id, tier, score, seen, tags FROM people`;

function exportClient(url: string, time: FakeTime = fakeTime(), rate = { limit: 10_000, windowMs: 60_000 }): ExportClient {
  return new ExportClient({
    endpoint: url,
    apiKey: TEST_KEY,
    rateLimiter: new RateLimiter({ ...rate, reserve: 0, clock: time.clock, sleep: time.sleep }),
    backoffMs: 5,
    maxBackoffMs: 50,
    maxAttempts: 10,
    clock: time.clock,
    sleep: time.sleep,
    random: () => 0.5,
  });
}

async function synced(files: Record<string, string> = { vip: VIP }): Promise<string> {
  const dir = audienceDir(files);
  const summary = await run(f.t.db, dir, { client: testClient(f.sandbox.url), minChangeCount: 1_000_000 });
  expect(summary.exitCode).toBe(0);
  return dir;
}

function verify(options: VerifyOptions & { names?: string[]; client?: ExportClient; dir?: string; stop?: AbortSignal } = {}) {
  const { names = [], client = exportClient(f.sandbox.url), dir, stop, ...rest } = options;
  return verifyAudiences(
    { db: f.t.db, schema: 'braze_bridge', log: silentLogger, client, exportRatePerMinute: 250, stop },
    names,
    rest,
    dir ? { dir, deps: { client: testClient(f.sandbox.url) }, options: { batchSize: 75, concurrency: 2, maxChangeRatio: 1, force: true } } : undefined,
  );
}

describe('comparing values with the sync type rules', () => {
  it('numbers numerically, times as instants, arrays and objects by value', () => {
    expect(sameValue(12.5, 12.5)).toBe(true);
    expect(sameValue(12.5, '12.5')).toBe(false);
    expect(sameValue('2026-01-01T10:00:00.000Z', '2026-01-01T10:00:00+00:00')).toBe(true);
    expect(sameValue('2026-01-01T10:00:00.000Z', '2026-01-01T10:00:01Z')).toBe(false);
    expect(sameValue(['a', 'b', 'a'], ['a', 'b'])).toBe(true);
    expect(sameValue(['a', 'b'], ['b', 'a'])).toBe(false);
    expect(sameValue({ x: 1, y: [1] }, { y: [1], x: 1 })).toBe(true);
    expect(sameValue({ x: 1 }, { x: 1, z: 2 })).toBe(false);
    expect(compareProfile({ tier: 'gold', score: 1, first_name: 'A' }, { first_name: 'B', custom_attributes: { tier: 'gold', extra: 1, score: 2 } }, ['tier', 'score', 'gone', 'first_name'], 'external_id'))
      .toEqual([{ attribute: 'score', kind: 'changed', braze: 2 }, { attribute: 'first_name', kind: 'changed', braze: 'B' }]);
  });
});

describe('verify', () => {
  it('finds no drift right after a sync, and exits 0', async () => {
    await synced();
    const summary = await verify({ all: true });
    expect(summary.exitCode).toBe(0);
    expect(summary.audiences[0]!.counts).toMatchObject({ checked: 120, drifted: 0, missingProfiles: 0, requests: 3 });
    // 120 external ids, 50 a request.
    expect(f.sandbox.exports.map((e) => (e.body.external_ids as string[]).length)).toEqual([50, 50, 20]);
    expect(f.sandbox.exports[0]!.body.fields_to_export).toContain('custom_attributes');
  });

  it('reports each kind of drift per attribute, a missing profile apart, and member keys but never values', async () => {
    await synced();
    f.sandbox.profiles.find({ external_id: 'p1' })!.custom.tier = 'silver'; // changed
    delete f.sandbox.profiles.find({ external_id: 'p2' })!.custom.score; // missing
    f.sandbox.profiles.find({ external_id: 'p3' })!.custom.tags = ['b', 'a']; // changed (order)
    f.sandbox.profiles.find({ external_id: 'p4' })!.custom.score = 5.5; // p4's is 4.5
    f.sandbox.profiles.find({ external_id: 'p5' })!.custom.seen = '2026-01-06T10:00:00+00:00'; // the same instant: no drift
    const p6 = f.sandbox.profiles.find({ external_id: 'p6' })!;
    f.sandbox.profiles.remove(p6); // deleted in Braze
    await f.t.db.query(`UPDATE people SET tier = NULL WHERE id = 'p7'`);
    await run(f.t.db, audienceDir({ vip: VIP }), { client: testClient(f.sandbox.url) }).catch(() => undefined);
    const summary = await verify({ all: true });
    const r = summary.audiences[0]!;
    expect(summary.exitCode).toBe(1);
    expect(r.status).toBe('partial');
    expect(r.counts).toMatchObject({ checked: 120, drifted: 5, missingProfiles: 1 });
    expect(r.counts.perAttribute).toEqual({
      tier: { changed: 1, missing: 0, unexpected: 0 },
      score: { changed: 1, missing: 1, unexpected: 0 },
      tags: { changed: 1, missing: 0, unexpected: 0 },
    });
    expect(r.examples.sort()).toEqual(['p1', 'p2', 'p3', 'p4', 'p6']);
    const { rows } = await f.t.db.query(`SELECT status, counts FROM braze_bridge.runs WHERE job = 'verify'`);
    expect(rows).toHaveLength(1);
    expect(rows[0]!.status).toBe('partial');
    expect(JSON.stringify(rows[0]!.counts)).not.toContain('silver');
  });

  it('reports a value Braze holds for an attribute the snapshot says is unset as unexpected', async () => {
    await f.t.db.query(`UPDATE people SET tier = NULL WHERE id = 'p9'`);
    await synced();
    f.sandbox.profiles.find({ external_id: 'p9' })!.custom.tier = 'platinum';
    const summary = await verify({ names: ['vip'], all: true });
    expect(summary.audiences[0]!.counts.perAttribute).toEqual({ tier: { changed: 0, missing: 0, unexpected: 1 } });
  });

  it('--repair resends exactly the drifted attributes, and the next verify finds none', async () => {
    const dir = await synced();
    f.sandbox.profiles.find({ external_id: 'p1' })!.custom.tier = 'silver';
    delete f.sandbox.profiles.find({ external_id: 'p2' })!.custom.score;
    f.sandbox.profiles.find({ external_id: 'p3' })!.custom.tier = null as unknown as string;
    delete f.sandbox.profiles.find({ external_id: 'p3' })!.custom.tier;
    await f.t.db.query(`UPDATE people SET tier = NULL WHERE id = 'p9'`);
    await run(f.t.db, dir, { client: testClient(f.sandbox.url) });
    f.sandbox.profiles.find({ external_id: 'p9' })!.custom.tier = 'platinum';
    const p6 = f.sandbox.profiles.find({ external_id: 'p6' })!;
    f.sandbox.profiles.remove(p6);
    f.sandbox.requests.length = 0;

    const dry = await verify({ all: true, repair: true, dryRun: true, dir });
    expect(dry.repair).toBeUndefined();
    expect(dry.audiences[0]!.counts.drifted).toBe(5);
    expect(f.sandbox.requests).toHaveLength(0);
    expect((await f.t.db.query(`SELECT count(*)::int AS n FROM braze_bridge.snapshots WHERE row_hash IS NULL`)).rows[0]!.n).toBe(0);

    const summary = await verify({ all: true, repair: true, dir });
    expect(summary.audiences[0]!.counts).toMatchObject({ drifted: 5, repaired: 5 });
    expect(summary.repair!.audiences[0]!.counts).toMatchObject({ changed: 5, failed: 0 });
    const sent = f.sandbox.requests.flatMap((r) => r.attributes).map(({ _update_existing_only, ...a }) => a);
    expect(sent.sort((a, b) => String(a.external_id).localeCompare(String(b.external_id)))).toEqual([
      { external_id: 'p1', tier: 'gold' },
      { external_id: 'p2', score: 2.5 },
      { external_id: 'p3', tier: 'gold' },
      { external_id: 'p6', tier: 'gold', score: 6.5, seen: '2026-01-07T10:00:00.000Z', tags: ['a', 'b'] },
      { external_id: 'p9', tier: null },
    ]);
    expect(summary.repair!.audiences[0]!.counts.updates).toBe(8);
    expect(f.sandbox.profile({ external_id: 'p1' })!.tier).toBe('gold');
    expect(f.sandbox.profile({ external_id: 'p9' })!.tier).toBeUndefined();

    const again = await verify({ all: true });
    expect(again.exitCode).toBe(0);
    expect(again.audiences[0]!.counts.drifted).toBe(0);
  });

  it('--sample checks that many members at random, split between audiences by size', async () => {
    await synced({ vip: VIP, few: `-- @identifier external_id\nSELECT id AS external_id, tier AS level FROM people WHERE id IN ('p1','p2','p3','p4','p5','p6','p7','p8','p9','p10','p11','p12')` });
    const summary = await verify({ sample: 33 });
    const by = Object.fromEntries(summary.audiences.map((a) => [a.audience, a.counts.checked]));
    expect(by).toEqual({ vip: 30, few: 3 });
    const again = await verify({ sample: 33 });
    const keys = (n: number) => (f.sandbox.exports[n]!.body.external_ids as string[]).join();
    expect(again.audiences[0]!.counts.checked + again.audiences[1]!.counts.checked).toBe(33);
    expect(f.sandbox.exports.length).toBe(4);
    expect(keys(0) === keys(2) && keys(1) === keys(3)).toBe(false);
  });

  it('confirms update-only members whose profile now exists, and counts those still waiting', async () => {
    await synced({ vip: `-- @identifier external_id\n-- @update_existing_only true\nSELECT id AS external_id, tier FROM people WHERE id IN ('p1', 'p2', 'p3')` });
    expect(f.sandbox.profiles.size).toBe(0); // all three ignored by Braze
    f.sandbox.profiles.create({ external_id: 'p1' });
    // p2's profile was created and got its attributes from a later (full) resend.
    f.sandbox.profiles.create({ external_id: 'p2' }).custom.tier = 'gold';
    const summary = await verify({ sample: 0 });
    expect(summary.audiences[0]!.counts).toMatchObject({ checked: 3, confirmed: 1, waiting: 1, drifted: 1, missingProfiles: 0 });
    const { rows } = await f.t.db.query(`SELECT member_key, unverified FROM braze_bridge.snapshots ORDER BY member_key`);
    expect(rows).toEqual([
      { member_key: 'p1', unverified: true }, // found but without its attributes: still resent in full next run
      { member_key: 'p2', unverified: false },
      { member_key: 'p3', unverified: true },
    ]);
    f.sandbox.requests.length = 0;
    await run(f.t.db, audienceDir({ vip: `-- @identifier external_id\n-- @update_existing_only true\nSELECT id AS external_id, tier FROM people WHERE id IN ('p1', 'p2', 'p3')` }), { client: testClient(f.sandbox.url), adopt: true });
    expect(f.sandbox.requests.flatMap((r) => r.attributes).map((a) => a.external_id).sort()).toEqual(['p1', 'p3']);
    expect(f.sandbox.profile({ external_id: 'p1' })).toEqual({ tier: 'gold' });
  });

  it('paces itself on 429 from the export endpoint, waits for the reset and checks everyone', async () => {
    await synced();
    const time = fakeTime();
    const strict = new BrazeSandbox({ apiKey: TEST_KEY, exportRateLimit: { limit: 1, windowMs: 1000 }, clock: time.clock });
    await strict.start();
    try {
      for (const p of f.sandbox.profiles.all) strict.profiles.add(structuredClone(p));
      const client = exportClient(strict.url, time, { limit: 100, windowMs: 1000 });
      const started = time.now();
      const summary = await verify({ all: true, client });
      expect(summary.audiences[0]!.counts).toMatchObject({ checked: 120, drifted: 0 });
      expect(summary.audiences[0]!.counts.rateLimited).toBeGreaterThan(0);
      expect(strict.exportCounts.rateLimited).toBeGreaterThan(0);
      const ok = strict.exports.filter((e) => e.status === 201);
      expect(ok).toHaveLength(3);
      expect(ok[2]!.at - started).toBeGreaterThanOrEqual(2000); // one a second
    } finally {
      await strict.stop();
    }
  });

  it('an interrupted --all resumes with the members not yet checked', async () => {
    await synced();
    const stop = new AbortController();
    f.sandbox.exportFaults = (n) => {
      if (n === 1) stop.abort();
      return undefined;
    };
    const first = await verify({ all: true, stop: stop.signal });
    expect(first.audiences[0]!.status).toBe('interrupted');
    expect(first.audiences[0]!.counts.checked).toBe(50);
    const second = await verify({ all: true });
    expect(second.audiences[0]!.counts.checked).toBe(70);
    expect(second.audiences[0]!.complete).toBe(true);
    // Finished: the next full check starts over.
    const third = await verify({ all: true });
    expect(third.audiences[0]!.counts.checked).toBe(120);
  });
});

describe('verify as a command', () => {
  it('exits 1 on drift, 0 once --repair has resent it, and records job = verify', async () => {
    const { cli } = await import('./helpers/cli.js');
    const dir = await synced();
    f.sandbox.profiles.find({ external_id: 'p1' })!.custom.tier = 'silver';
    const env = f.env;
    const found = await cli(['verify', 'vip', '--all', '--audiences', dir], env);
    expect(found.code, found.stderr).toBe(1);
    expect(found.stdout).toContain('tier: 1 changed, 0 missing, 0 unexpected');
    expect(found.stdout).not.toContain('silver');
    const repaired = await cli(['verify', 'vip', '--all', '--repair', '--audiences', dir], env);
    expect(repaired.code, repaired.stderr).toBe(1);
    expect(repaired.stdout).toContain('1 data points resent');
    const clean = await cli(['verify', 'vip', '--sample', '50', '--audiences', dir], env);
    expect(clean.code, clean.stderr).toBe(0);
    const { rows } = await f.t.db.query(`SELECT status FROM braze_bridge.runs WHERE job = 'verify' ORDER BY id`);
    expect(rows.map((r) => r.status)).toEqual(['partial', 'partial', 'succeeded']);
  });
});

describe('verify in the metrics file, status and the scheduler', () => {
  it('the metrics file and status show what the last verify found, per audience and attribute', async () => {
    const { cli } = await import('./helpers/cli.js');
    const { mkdtempSync, readFileSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const dir = await synced();
    f.sandbox.profiles.find({ external_id: 'p1' })!.custom.tier = 'silver';
    delete f.sandbox.profiles.find({ external_id: 'p2' })!.custom.score;
    const env = f.env;
    const metrics = join(mkdtempSync(join(tmpdir(), 'bb-verify-metrics-')), 'braze_bridge.prom');
    const r = await cli(['verify', 'vip', '--all', '--audiences', dir, '--metrics-file', metrics], env);
    expect(r.code, r.stderr).toBe(1);
    const text = readFileSync(metrics, 'utf8');
    expect(text).toContain('braze_bridge_verify_checked_members{audience="vip"} 120');
    expect(text).toContain('braze_bridge_verify_drifted_members{audience="vip"} 2');
    expect(text).toContain('braze_bridge_verify_drifted_values{audience="vip",attribute="tier",kind="changed"} 1');
    expect(text).toContain('braze_bridge_verify_drifted_values{audience="vip",attribute="score",kind="missing"} 1');
    const status = await cli(['status'], env);
    expect(status.stdout).toMatch(/\(verify vip\): 120 checked, 2 drifted, 0 missing from Braze/);
  });

  it('schedule --verify-every takes a duration and --verify-sample a count, and refuses others with exit 2', async () => {
    const { durationMinutes, loadCurrentsConfig } = await import('../src/config/load-config.js');
    expect([durationMinutes('24h'), durationMinutes('30m'), durationMinutes('7d'), durationMinutes('90'), durationMinutes('30s'), durationMinutes('soon')]).toEqual([1440, 30, 10080, 90, 0.5, undefined]);
    expect(loadCurrentsConfig({ verifyEvery: '24h', verifySample: 5000 }, {}, '/tmp')).toMatchObject({ verifyEveryMinutes: 1440, verifySample: 5000 });
    expect(() => loadCurrentsConfig({ verifyEvery: 'daily' }, {}, '/tmp')).toThrow(/--verify-every must be a duration/);
    const { cli } = await import('./helpers/cli.js');
    const bad = await cli(['schedule', '--verify-every', 'daily'], f.env);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--verify-every must be a duration/);
  });

  it('schedule runs a sampled verify on its period and records it', async () => {
    const { startCli, waitFor } = await import('./helpers/cli.js');
    const dir = await synced();
    const env = f.env;
    const verifyRuns = async () => (await f.t.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM braze_bridge.runs WHERE job = 'verify' AND status <> 'running'`)).rows[0]!.n;
    const scheduler = startCli(['schedule', '--audiences', dir, '--verify-every', '2s', '--verify-sample', '10'], env);
    try {
      await waitFor(async () => (await verifyRuns()) >= 1, 'a scheduled verify finished', { cli: scheduler, timeoutMs: 30_000 });
    } finally {
      scheduler.child.kill('SIGTERM');
      await scheduler.done;
    }
    const { rows } = await f.t.db.query(`SELECT audience, counts->>'checked' AS checked FROM braze_bridge.runs WHERE job = 'verify' ORDER BY id LIMIT 1`);
    expect(rows[0]).toEqual({ audience: 'vip', checked: '10' });
  });
});

describe('verify by email, through faults', () => {
  it('checks email-keyed members one per request and retries a 5xx from the export endpoint', async () => {
    await f.t.db.query(`ALTER TABLE people ADD COLUMN mail text; UPDATE people SET mail = id || '@example.com'`);
    const dir = audienceDir({ mails: `-- @identifier email\nSELECT mail AS email, tier FROM people WHERE id IN ('p1', 'p2', 'p3')` });
    expect((await run(f.t.db, dir, { client: testClient(f.sandbox.url) })).exitCode).toBe(0);
    f.sandbox.profiles.find({ email: 'p2@example.com' })!.custom.tier = 'bronze';
    f.sandbox.exportFaults = (n) => (n === 1 ? { status: 503 } : undefined);
    const summary = await verify({ all: true });
    const a = summary.audiences[0]!;
    expect(a.counts).toMatchObject({ checked: 3, drifted: 1 });
    expect(a.counts.perAttribute.tier).toEqual({ changed: 1, missing: 0, unexpected: 0 });
    expect(a.examples).toEqual(['p2@example.com']);
    const bodies = f.sandbox.exports.map((r) => r.body);
    // One request per email, never a list of emails; the 503 was retried.
    expect(f.sandbox.exportCounts.requests).toBe(4);
    expect(bodies.filter((b) => 'email_address' in b).length).toBe(3);
    expect(bodies.some((b) => 'external_ids' in b)).toBe(false);
  });
});
