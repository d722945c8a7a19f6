/** One database per test file, cloned from the migrated template (graphile-worker style). */
import { randomBytes } from 'node:crypto';
import { inject } from 'vitest';
import { createDatabase, type Database } from '../../src/db/pool.js';
import { TEMPLATE, withDatabase } from './global-setup.js';

export interface TestDatabase {
  db: Database;
  url: string;
  name: string;
  drop(): Promise<void>;
}

export async function createTestDatabase(): Promise<TestDatabase> {
  const adminUrl = inject('adminUrl');
  const name = `bb_test_${randomBytes(5).toString('hex')}`;
  const admin = createDatabase({ connectionString: adminUrl, max: 1 });
  try {
    await admin.query(`CREATE DATABASE ${name} TEMPLATE ${TEMPLATE}`);
  } finally {
    await admin.end();
  }
  const url = withDatabase(adminUrl, name);
  const db = createDatabase({ connectionString: url, max: 12 });
  return {
    db,
    url,
    name,
    drop: async () => {
      await db.end();
      const a = createDatabase({ connectionString: adminUrl, max: 1 });
      try {
        await a.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        await a.end();
      }
    },
  };
}
