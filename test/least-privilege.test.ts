/**
 * Least privilege: an admin migrates once; a job role with SELECT on the warehouse and DML on
 * the state tables syncs and reads status, because a current schema costs no DDL. Read-only
 * commands create nothing; a missing grant is a setting to fix (exit 2) that names the step.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BrazeSandbox } from '../src/braze/sandbox.js';
import { createTestDatabase, type TestDatabase } from './helpers/database.js';
import { audienceDir, TEST_KEY } from './helpers/audiences.js';
import { cli } from './helpers/cli.js';

let t: TestDatabase;
let sandbox: BrazeSandbox;
const role = `bb_job_${randomBytes(4).toString('hex')}`;
const password = randomBytes(8).toString('hex');
let jobUrl: string;
const dir = audienceDir({ people: 'SELECT id AS external_id, tier FROM people' });

beforeAll(async () => {
  t = await createTestDatabase();
  sandbox = new BrazeSandbox({ apiKey: TEST_KEY });
  await sandbox.start();
  // The warehouse table, and a job role as the README grants it (the schema is already migrated by the admin).
  await t.db.query(`
    CREATE TABLE people AS SELECT i AS id, 't' || (i % 4) AS tier FROM generate_series(1, 200) i;
    CREATE ROLE ${role} LOGIN PASSWORD '${password}';
    REVOKE CREATE ON SCHEMA public FROM PUBLIC;
    GRANT CONNECT, TEMPORARY ON DATABASE ${t.name} TO ${role};
    GRANT USAGE ON SCHEMA public TO ${role};
    GRANT SELECT ON people TO ${role};
    GRANT USAGE ON SCHEMA braze_bridge TO ${role};
    GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA braze_bridge TO ${role};
    GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA braze_bridge TO ${role};`);
  const url = new URL(t.url);
  url.username = role;
  url.password = password;
  jobUrl = url.toString();
});
afterAll(async () => {
  await sandbox?.stop();
  if (t) {
    await t.db.query(`DROP OWNED BY ${role}`).catch(() => {});
    await t.drop();
    // Roles are cluster-wide: drop it once its database is gone.
    const { createDatabase } = await import('../src/db/pool.js');
    const admin = createDatabase({ connectionString: (await import('vitest')).inject('adminUrl'), max: 1 });
    await admin.query(`DROP ROLE IF EXISTS ${role}`).finally(() => admin.end());
  }
});

const env = () => ({ DATABASE_URL: jobUrl, BRAZE_REST_ENDPOINT: sandbox.url, BRAZE_API_KEY: TEST_KEY });
const schemas = async () => (await t.db.query<{ nspname: string }>(`SELECT nspname FROM pg_namespace WHERE nspname LIKE 'braze_bridge%' ORDER BY 1`)).rows.map((r) => r.nspname);

describe('a least-privilege job role', () => {
  it('the job role has no CREATE on the database (the premise of this test)', async () => {
    const { rows } = await t.db.query<{ ok: boolean }>(`SELECT has_database_privilege($1, $2, 'CREATE') AS ok`, [role, t.name]);
    expect(rows[0]!.ok).toBe(false);
  });

  it('syncs, then reads status and failures, with the schema the admin migrated', async () => {
    const sync = await cli(['sync', '--audiences', dir, '--json'], env());
    expect(sync.stderr).not.toMatch(/permission denied/);
    expect(sync.code).toBe(0);
    expect(JSON.parse(sync.stdout).audiences[0]).toMatchObject({ status: 'succeeded', counts: { new: 200 } });
    expect(sandbox.profiles.size).toBe(200);

    const status = await cli(['status', '--json'], env());
    expect(status.code).toBe(0);
    expect(JSON.parse(status.stdout)).toEqual([expect.objectContaining({ audience: 'people', status: 'succeeded' })]);
    const failures = await cli(['failures', 'people'], env());
    expect(failures.code).toBe(0);
    expect(failures.stdout).toMatch(/0 failed member/);
  });

  it('read-only commands with a mistyped --state-schema create nothing and say what to check, exit 2 (even as the admin)', async () => {
    for (const url of [jobUrl, t.url]) {
      const r = await cli(['status', '--state-schema', 'braze_bridgee'], { DATABASE_URL: url });
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(/state schema braze_bridgee does not exist.*--state-schema/);
      const f = await cli(['failures', 'people', '--state-schema', 'braze_bridgee'], { DATABASE_URL: url });
      expect(f.code).toBe(2);
    }
    expect(await schemas()).toEqual(['braze_bridge']);
  });

  it('a sync that would have to migrate names the step and the privilege, exit 2', async () => {
    const r = await cli(['sync', '--audiences', dir, '--state-schema', 'braze_bridge_other'], env());
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/creating the state schema braze_bridge_other: permission denied for database .*needs CREATE on the database.*braze-bridge migrate/);
    expect(await schemas()).toEqual(['braze_bridge']);
  });

  it('a missing grant on a warehouse table is exit 2 with the server reason', async () => {
    await t.db.query(`CREATE TABLE IF NOT EXISTS secrets AS SELECT 1 AS id`);
    const secret = audienceDir({ hidden: 'SELECT id AS external_id, id AS n FROM secrets' });
    const r = await cli(['sync', '--audiences', secret], env());
    expect(r.code).toBe(2);
    expect(r.stderr + r.stdout).toMatch(/permission denied for table secrets/);
  });
});
