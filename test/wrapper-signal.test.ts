/**
 * A wrapper (npx, a shell) that alone gets SIGTERM exits and leaves the CLI re-parented: the CLI
 * notices and stops as if signalled, instead of sending on as an orphan.
 */
import { spawn } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BrazeSandbox } from '../src/braze/sandbox.js';
import { createTestDatabase, type TestDatabase } from './helpers/database.js';
import { audienceDir, TEST_KEY } from './helpers/audiences.js';
import { BIN, waitFor } from './helpers/cli.js';

let t: TestDatabase;
let sandbox: BrazeSandbox;
const dir = audienceDir({ people: 'SELECT id AS external_id, tier FROM people' });

beforeAll(async () => {
  t = await createTestDatabase();
  sandbox = new BrazeSandbox({ apiKey: TEST_KEY });
  await sandbox.start();
  await t.db.query(`CREATE TABLE people AS SELECT i AS id, 't' || (i % 4) AS tier FROM generate_series(1, 600) i`);
});
afterAll(async () => {
  await sandbox?.stop();
  await t?.drop();
});

describe('signals through a wrapper', () => {
  it('SIGTERM to the wrapper alone: the CLI stops within seconds and the run is recorded interrupted', async () => {
    sandbox.faults = ({ n }) => (n > 2 ? { status: 429, retryAfter: '120' } : undefined);
    // `; true` keeps sh from exec-ing node: sh stays the parent, as npx does.
    const wrapper = spawn('sh', ['-c', `"${process.execPath}" "${BIN}" sync --audiences "${dir}" --concurrency 2; true`], {
      env: { PATH: process.env.PATH, HOME: process.env.HOME, DATABASE_URL: t.url, BRAZE_REST_ENDPOINT: sandbox.url, BRAZE_API_KEY: TEST_KEY },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    wrapper.stderr!.on('data', (d) => (stderr += d));
    // 'close' waits for the pipes, which the CLI holds even once sh is gone.
    const closed = new Promise<void>((resolve) => wrapper.on('close', () => resolve()));
    await waitFor(() => sandbox.counts.rejected > 0 && /waiting 2 min|pausing every request/.test(stderr), 'the CLI waits on a Retry-After');
    wrapper.kill('SIGTERM');
    const signalled = Date.now();
    await closed;
    expect(Date.now() - signalled).toBeLessThan(15_000);
    expect(stderr).toMatch(/parent process exited/);
    const { rows } = await t.db.query<{ status: string }>(`SELECT status FROM braze_bridge.runs WHERE audience = 'people'`);
    expect(rows.map((r) => r.status)).toEqual(['interrupted']);
  });
});
