/**
 * Once per test run: find or start PostgreSQL (TEST_DATABASE_URL, else the embedded one in a
 * temporary folder), build a template database with the state schema migrated, and build the
 * CLI so process tests run what users run. Each test file then clones the template.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestProject } from 'vitest/node';
import { startEmbeddedPostgres, type EmbeddedPostgres } from '../../src/db/embedded.js';
import { createDatabase } from '../../src/db/pool.js';
import { migrate } from '../../src/db/migrate.js';

export const TEMPLATE = 'braze_bridge_test_template';

declare module 'vitest' {
  export interface ProvidedContext {
    adminUrl: string;
  }
}

let server: EmbeddedPostgres | undefined;
let dir: string | undefined;

export async function setup(project: TestProject): Promise<void> {
  let adminUrl = process.env.TEST_DATABASE_URL;
  if (!adminUrl) {
    dir = mkdtempSync(join(tmpdir(), 'braze-bridge-test-pg-'));
    // As root, the server runs as the postgres user, which must be able to enter the folder.
    chmodSync(dir, 0o755);
    try {
      server = await startEmbeddedPostgres({ dir: join(dir, 'data') });
    } catch (error) {
      throw new Error(
        `Tests need PostgreSQL: the embedded server did not start (${String(error)}). Set TEST_DATABASE_URL=postgres://user:pass@host/db to use a server of yours.`,
      );
    }
    adminUrl = server.url('postgres');
  }
  const admin = createDatabase({ connectionString: adminUrl, max: 1 });
  try {
    await admin.query(`DROP DATABASE IF EXISTS ${TEMPLATE} WITH (FORCE)`);
    await admin.query(`CREATE DATABASE ${TEMPLATE}`);
  } catch (error) {
    throw new Error(`Tests need a PostgreSQL user that may create databases (${String(error)}); check TEST_DATABASE_URL.`);
  } finally {
    await admin.end();
  }
  const template = createDatabase({ connectionString: withDatabase(adminUrl, TEMPLATE), max: 1 });
  try {
    await migrate(template, 'braze_bridge');
  } finally {
    await template.end();
  }
  execFileSync(process.execPath, [join('node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json'], { stdio: 'inherit' });
  project.provide('adminUrl', adminUrl);
}

export async function teardown(): Promise<void> {
  await server?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
}

export function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${database}`;
  return u.toString();
}
