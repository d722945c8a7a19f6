/** braze_bridge_runs_total is a counter: pruning old runs from the history never lowers it. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { renderMetrics } from '../src/run/metrics.js';
import { pruneRuns } from '../src/run/run-store.js';
import { createTestDatabase, type TestDatabase } from './helpers/database.js';

let t: TestDatabase;
beforeAll(async () => {
  t = await createTestDatabase();
});
afterAll(async () => {
  await t?.drop();
});

const total = (text: string, labels: string) => Number(new RegExp(`^braze_bridge_runs_total\\{${labels.replace(/[{}]/g, '\\$&')}\\} (\\d+)$`, 'm').exec(text)?.[1] ?? NaN);

describe('run counters', () => {
  it('keep counting runs pruned from the history, across several prunes', async () => {
    const insert = (days: number, status: string, audience: string | null) =>
      t.db.query(`INSERT INTO braze_bridge.runs (job, audience, status, args, started_at, finished_at) VALUES ('sync', $1, $2, '{}', now() - make_interval(days => $3::int), now() - make_interval(days => $3::int))`, [audience, status, days]);
    await insert(40, 'succeeded', 'people');
    await insert(35, 'succeeded', 'people');
    await insert(1, 'succeeded', 'people');
    await insert(50, 'aborted', null);
    const before = await renderMetrics(t.db, 'braze_bridge');
    expect(total(before, 'job="sync",audience="people",outcome="succeeded"')).toBe(3);

    await pruneRuns(t.db, 'braze_bridge', 30);
    const { rows } = await t.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM braze_bridge.runs`);
    expect(rows[0]!.n).toBe(1);
    const after = await renderMetrics(t.db, 'braze_bridge');
    expect(total(after, 'job="sync",audience="people",outcome="succeeded"')).toBe(3);
    expect(total(after, 'job="sync",audience="",outcome="aborted"')).toBe(1);

    await insert(45, 'succeeded', 'people');
    await pruneRuns(t.db, 'braze_bridge', 30);
    expect(total(await renderMetrics(t.db, 'braze_bridge'), 'job="sync",audience="people",outcome="succeeded"')).toBe(4);
  });
});
