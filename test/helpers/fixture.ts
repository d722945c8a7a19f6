/** A test file's own database (and Braze sandbox, or scratch folder), started before its tests and removed after. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll } from 'vitest';
import { BrazeSandbox } from '../../src/braze/sandbox.js';
import { createTestDatabase, type TestDatabase } from './database.js';
import { TEST_KEY } from './audiences.js';

export interface DatabaseAndSandbox {
  readonly t: TestDatabase;
  readonly sandbox: BrazeSandbox;
  /** The environment the CLI needs to reach both, as a process. */
  readonly env: Record<string, string>;
}

export function useDatabaseAndSandbox(setup?: (t: TestDatabase) => Promise<void>): DatabaseAndSandbox {
  let t: TestDatabase | undefined;
  let sandbox: BrazeSandbox | undefined;
  beforeAll(async () => {
    t = await createTestDatabase();
    sandbox = new BrazeSandbox({ apiKey: TEST_KEY });
    await sandbox.start();
    await setup?.(t);
  });
  afterAll(async () => {
    await sandbox?.stop();
    await t?.drop();
  });
  return {
    get t() {
      return t!;
    },
    get sandbox() {
      return sandbox!;
    },
    get env() {
      return { DATABASE_URL: t!.url, BRAZE_REST_ENDPOINT: sandbox!.url, BRAZE_API_KEY: TEST_KEY };
    },
  };
}

export interface DatabaseAndFolder {
  readonly t: TestDatabase;
  /** A scratch folder of the test file's own, removed with the database. */
  readonly dir: string;
}

export function useDatabaseAndFolder(prefix: string): DatabaseAndFolder {
  let t: TestDatabase | undefined;
  let dir: string | undefined;
  beforeAll(async () => {
    t = await createTestDatabase();
    dir = mkdtempSync(join(tmpdir(), prefix));
  });
  afterAll(async () => {
    await t?.drop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });
  return {
    get t() {
      return t!;
    },
    get dir() {
      return dir!;
    },
  };
}
