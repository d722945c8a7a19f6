/** Strict options through the CLI: exit 2 with one line that says what to fix, per-command help, no secrets printed. */
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BrazeSandbox } from '../src/braze/sandbox.js';
import { createTestDatabase, type TestDatabase } from './helpers/database.js';
import { audienceDir, TEST_KEY } from './helpers/audiences.js';
import { cli } from './helpers/cli.js';

let t: TestDatabase;
let sandbox: BrazeSandbox;
const dir = audienceDir({ people: 'SELECT id AS external_id, tier FROM people' });
let env: Record<string, string>;

beforeAll(async () => {
  t = await createTestDatabase();
  sandbox = new BrazeSandbox({ apiKey: TEST_KEY });
  await sandbox.start();
  await t.db.query(`CREATE TABLE people AS SELECT i AS id, 't' || (i % 4) AS tier FROM generate_series(1, 20) i`);
  env = { DATABASE_URL: t.url, BRAZE_REST_ENDPOINT: sandbox.url, BRAZE_API_KEY: TEST_KEY };
});
afterAll(async () => {
  await sandbox?.stop();
  await t?.drop();
});

const oneLine = (stderr: string) => expect(stderr.trim().split('\n')).toHaveLength(1);

describe('strict options', () => {
  it('sync --out without --dry-run is refused before anything is sent', async () => {
    const r = await cli(['sync', '--audiences', dir, '--out', join(tmpdir(), 'bb-out.ndjson')], env);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--out .*--dry-run/);
    expect(sandbox.counts.requests).toBe(0);
  });

  it('--out into a folder that does not exist is a setting to fix, not a stack trace', async () => {
    const r = await cli(['plan', '--audiences', dir, '--out', '/nonexistent-folder/x.ndjson'], env);
    expect(r.code).toBe(2);
    oneLine(r.stderr);
    expect(r.stderr).toMatch(/--out: the folder \/nonexistent-folder does not exist/);
  });

  it.each([
    [['status', '--runs', 'abc'], /--runs must be a whole number/],
    [['status', '--runs', '0'], /--runs must be a whole number/],
    [['failures', 'people', '--limit', '-3'], /--limit must be a whole number/],
    [['status', '--connect-timeout', '0'], /--connect-timeout must be a number from 1/],
  ])('%j is exit 2 with the reason', async (args, reason) => {
    const r = await cli(args, env);
    expect(r.code).toBe(2);
    oneLine(r.stderr);
    expect(r.stderr).toMatch(reason);
  });

  it('status and failures of an unknown audience name it and the known ones, exit 2', async () => {
    expect((await cli(['sync', '--audiences', dir], env)).code).toBe(0);
    const s = await cli(['status', 'poeple'], env);
    expect(s.code).toBe(2);
    expect(s.stderr).toMatch(/no run of an audience named "poeple".*people/);
    const f = await cli(['failures', 'poeple'], env);
    expect(f.code).toBe(2);
    expect(f.stderr).toMatch(/"poeple".*people/);
    expect((await cli(['status', 'people'], env)).code).toBe(0);
  });

  it('a broken audience file is a failed run in the history, so status shows it', async () => {
    const broken = audienceDir({ broken_file: '-- @identifier nonsense\nSELECT id AS external_id FROM people' });
    const r = await cli(['sync', '--audiences', broken], env);
    expect(r.code).toBe(2);
    const s = await cli(['status', 'broken_file', '--json'], env);
    expect(s.code).toBe(0);
    expect(JSON.parse(s.stdout)).toEqual([expect.objectContaining({ audience: 'broken_file', status: 'failed', error: expect.stringMatching(/broken_file\.sql/) })]);
    // plan records nothing
    await cli(['plan', '--audiences', broken], env);
    expect((await t.db.query(`SELECT 1 FROM braze_bridge.runs WHERE audience = 'broken_file'`)).rowCount).toBe(1);
  });

  it('a mistyped command gets a suggestion, exit 2', async () => {
    const r = await cli(['snyc'], env);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/Did you mean sync/);
  });

  it('credentials inside BRAZE_REST_ENDPOINT are never printed', async () => {
    const withCreds = sandbox.url.replace('http://', 'http://ops:s3cr3t-pass@');
    const r = await cli(['sync', '--audiences', dir, '--force'], { ...env, BRAZE_REST_ENDPOINT: `${withCreds}/wrong-path` });
    await t.db.query(`TRUNCATE braze_bridge.snapshots`);
    const again = await cli(['sync', '--audiences', dir], { ...env, BRAZE_REST_ENDPOINT: `${withCreds}/wrong-path`, LOG_LEVEL: 'debug' });
    const status = await cli(['status', 'people', '--json'], { ...env, BRAZE_REST_ENDPOINT: withCreds });
    for (const out of [r, again, status]) expect(out.stdout + out.stderr).not.toContain('s3cr3t-pass');
    expect(again.code).toBe(4);
    expect(again.stderr).toMatch(/404/);
  });
});

describe('per-command help', () => {
  it('lists only that command\'s options and points to help env instead of repeating the environment', async () => {
    const plan = await cli(['plan', '--help']);
    expect(plan.code).toBe(0);
    expect(plan.stdout).toMatch(/--batch-size/);
    expect(plan.stdout).not.toMatch(/--concurrency|--rate-limit|--max-attempts|--force|--adopt|--notify-url/);
    expect(plan.stdout).not.toMatch(/BRAZE_API_KEY/);
    expect(plan.stdout).toMatch(/braze-bridge help env/);
    const sync = await cli(['sync', '--help']);
    expect(sync.stdout).toMatch(/--concurrency[\s\S]*--max-attempts[\s\S]*--connect-timeout|--connect-timeout[\s\S]*--concurrency/);
    const helpEnv = await cli(['help', 'env']);
    expect(helpEnv.code).toBe(0);
    expect(helpEnv.stdout).toMatch(/BRAZE_API_KEY[\s\S]*Exit codes/);
  });

  it('an unknown flag is exit 2', async () => {
    const r = await cli(['plan', '--concurrency', '3', '--audiences', dir], env);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/Unknown argument/i);
  });
});
