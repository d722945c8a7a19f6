/**
 * The quick start's embedded PostgreSQL as root: from a folder other users cannot enter it says
 * in one line what to do (no spawn EACCES stack trace); from an ordinary folder it works; either
 * way no password file is left in the system temp folder. Runs only as root.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { BIN } from './helpers/cli.js';

const asRoot = userInfo().uid === 0;
const leftovers = () => readdirSync(tmpdir()).filter((f) => f.startsWith('pg-password-') || f.startsWith('braze-bridge-initdb-'));
const folders: string[] = [];
afterAll(() => {
  for (const f of folders) rmSync(f, { recursive: true, force: true });
});

function runIn(cwd: string, args: string[]) {
  return spawnSync(process.execPath, [BIN, ...args], { cwd, encoding: 'utf8', timeout: 120_000, env: { PATH: process.env.PATH, HOME: process.env.HOME, LOG_LEVEL: 'info' } });
}

describe.skipIf(!asRoot)('the embedded default as root', () => {
  it('in a folder only root can enter: one line saying what to do, exit 2, nothing left behind', () => {
    const before = leftovers();
    const home = mkdtempSync(join(tmpdir(), 'braze-bridge-root-only-'));
    folders.push(home);
    chmodSync(home, 0o700);
    const project = join(home, 'braze-bridge');
    mkdirSync(project);
    const r = runIn(project, ['migrate']);
    expect(r.status).toBe(2);
    expect(r.stderr).not.toMatch(/EACCES|\n\s+at /);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/runs as the postgres user .*cannot reach its data folder .*braze-bridge-root-only-\w+ is mode 700.*DATABASE_URL/);
    expect(existsSync(join(project, '.braze-bridge', 'pg', 'PG_VERSION'))).toBe(false);
    expect(leftovers()).toEqual(before);
  });

  it('in a folder others can enter: the embedded server starts, and leaves no password file in the temp folder', () => {
    const before = leftovers();
    const project = mkdtempSync(join(tmpdir(), 'braze-bridge-open-'));
    folders.push(project);
    chmodSync(project, 0o755);
    const r = runIn(project, ['migrate']);
    expect(r.stderr).not.toMatch(/\n\s+at /);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/state schema braze_bridge is at migration/);
    expect(existsSync(join(project, '.braze-bridge', 'pg', 'PG_VERSION'))).toBe(true);
    expect(leftovers()).toEqual(before);
  }, 120_000);
});
