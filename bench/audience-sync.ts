/**
 * Audience sync (part of `npm run bench`): figures, not tests. Each figure is printed with its target and, where the
 * target is a ratio, the baseline measured in the same run on the same machine.
 *
 *   1. Planning a 1,000,000-member audience where 1% changed, vs CREATE TEMP TABLE AS the query.
 *   2. Peak RSS of the CLI syncing 100,000 vs 1,000,000 members (target flat, < 300 MB).
 *   3. Delivery against a sandbox limited to 1,000 requests per 3 s: share of the limit achieved.
 *
 * BENCH_MEMBERS scales the large audience down for a quick look (default 1000000).
 */
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startEmbeddedPostgres } from '../src/db/embedded.js';
import { createDatabase, type Database } from '../src/db/pool.js';
import { migrate } from '../src/db/migrate.js';
import { BrazeSandbox } from '../src/braze/sandbox.js';
import { runAudiences } from '../src/audience/run-audiences.js';
import { silentLogger } from '../src/log.js';

const MEMBERS = Number(process.env.BENCH_MEMBERS ?? 1_000_000);
const SMALL = Math.round(MEMBERS / 10);
const root = process.cwd();
const work = join(root, '.braze-bridge', 'bench');
/**
 * Each audience in a folder and a state schema of its own: they select the same columns, and
 * audiences in one state schema may not write the same attribute.
 */
function audienceFolder(name: string, sql: string): string {
  const dir = join(work, 'audiences', name);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, `${name}.sql`), sql);
  return dir;
}
const KEY = 'bench-key-0000000000000000';

const QUERY = (limit: number) => `SELECT id AS external_id, name, visits, ltv, is_active, signup_date, last_seen, tags, prefs
FROM bench_members WHERE id <= ${limit}`;

function line(label: string, value: string, target = '') {
  process.stdout.write(`${label.padEnd(58)} ${value.padEnd(28)} ${target}\n`);
}

async function timed<T>(fn: () => Promise<T>): Promise<[T, number]> {
  const t = process.hrtime.bigint();
  const r = await fn();
  return [r, Number(process.hrtime.bigint() - t) / 1e6];
}

/** Run the built CLI and sample its peak resident memory (VmHWM) from /proc. */
function cliPeakRss(args: string[], env: Record<string, string>): Promise<{ code: number | null; peakMb: number; stdout: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [join(root, 'bin', 'braze-bridge.js'), ...args], { env: { ...process.env, ...env, LOG_LEVEL: 'warn' }, stdio: ['ignore', 'pipe', 'inherit'] });
    let peak = 0;
    let stdout = '';
    child.stdout.on('data', (d) => (stdout += d));
    const sample = () => {
      try {
        const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'));
        if (m) peak = Math.max(peak, Number(m[1]) / 1024);
      } catch {
        /* exited */
      }
    };
    const timer = setInterval(sample, 50);
    child.on('close', (code) => {
      clearInterval(timer);
      resolve({ code, peakMb: peak, stdout });
    });
  });
}

async function seed(db: Database) {
  await db.query('DROP TABLE IF EXISTS bench_members');
  await db.query(`CREATE TABLE bench_members AS
    SELECT i AS id, 'member-' || i AS name, (i % 1000)::int AS visits, round((i % 100000) / 7.0, 2)::numeric(12,2) AS ltv,
           i % 2 = 0 AS is_active, date '2020-01-01' + (i % 2000) AS signup_date,
           timestamptz '2026-01-01' + (i % 100000) * interval '1 second' AS last_seen,
           ARRAY['tag' || (i % 7), 'tag' || (i % 11)] AS tags,
           jsonb_build_object('channel', CASE WHEN i % 2 = 0 THEN 'email' ELSE 'sms' END, 'weekly', i % 3 = 0) AS prefs
    FROM generate_series(1, ${MEMBERS}) AS i`);
  await db.query('ALTER TABLE bench_members ADD PRIMARY KEY (id)');
  await db.query('ANALYZE bench_members');
}

async function main() {
  process.stdout.write(`braze-bridge bench: ${MEMBERS.toLocaleString('en')} members, node ${process.version}\n\n`);
  const server = await startEmbeddedPostgres({ dir: join(work, 'pg') });
  await server.ensureDatabase('bench');
  const url = server.url('bench');
  const db = createDatabase({ connectionString: url, max: 8 });
  const sandbox = new BrazeSandbox({ apiKey: KEY });
  try {
    for (const schema of ['braze_bridge', 'bench_small', 'bench_rate']) await db.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await migrate(db, 'braze_bridge');
    const [, seedMs] = await timed(() => seed(db));
    line('seed table', `${(seedMs / 1000).toFixed(1)} s`);
    const smallDir = audienceFolder('bench_small', QUERY(SMALL));
    const largeDir = audienceFolder('bench_large', QUERY(MEMBERS));
    const endpoint = await sandbox.start();
    const env = { DATABASE_URL: url, BRAZE_REST_ENDPOINT: endpoint, BRAZE_API_KEY: KEY };
    const common = ['--rate-limit', '1000000', '--concurrency', '8', '--json'];

    // 2. Peak RSS, first sync (every member new: the most the CLI ever streams).
    process.stdout.write('\n2. Peak RSS of the CLI (first sync: every member is sent)\n');
    const small = await cliPeakRss(['sync', 'bench_small', '--audiences', smallDir, '--state-schema', 'bench_small', ...common], env);
    line(`   ${SMALL.toLocaleString('en')} members`, `${small.peakMb.toFixed(0)} MB (exit ${small.code})`);
    const [large, largeMs] = await timed(() => cliPeakRss(['sync', 'bench_large', '--audiences', largeDir, ...common], env));
    line(`   ${MEMBERS.toLocaleString('en')} members`, `${large.peakMb.toFixed(0)} MB (exit ${large.code})`, 'target: flat, < 300 MB');
    line('   ratio large / small', `${(large.peakMb / small.peakMb).toFixed(2)}x`, 'target: ~1.0x');
    line(`   sync of ${MEMBERS.toLocaleString('en')} new members to the sandbox`, `${(largeMs / 1000).toFixed(1)} s`);
    const deliveredLarge = sandbox.profiles.size;
    line('   profiles in the sandbox', deliveredLarge.toLocaleString('en'), `expected ${MEMBERS.toLocaleString('en')} (the small audience's are among them)`);

    // 1. Planning with 1% changed vs materialising the query.
    process.stdout.write('\n1. Planning a run where 1% of members changed\n');
    await db.query(`UPDATE bench_members SET visits = visits + 1 WHERE id % 100 = 0`);
    await db.query('VACUUM ANALYZE bench_members');
    // What autovacuum does after a large insert: the snapshot's (key, hash) then come from an
    // index-only scan rather than the wide rows.
    await db.query('VACUUM ANALYZE braze_bridge.snapshots');
    const baselines: number[] = [];
    const plans: number[] = [];
    for (let i = 0; i < 3; i++) {
      const [, ctas] = await timed(() =>
        db.withConnection(async (c) => {
          await c.query(`CREATE TEMP TABLE bench_ctas AS ${QUERY(MEMBERS)}`);
          await c.query('DROP TABLE bench_ctas');
        }),
      );
      baselines.push(ctas);
      const [summary, plan] = await timed(() =>
        runAudiences({ db, schema: 'braze_bridge', log: silentLogger }, { dir: largeDir, names: ['bench_large'] }, { mode: 'plan', batchSize: 75, concurrency: 4, maxChangeRatio: 0.5, force: false }),
      );
      plans.push(plan);
      if (i === 0) line('   members changed (planned)', String(summary.audiences[0]!.counts.changed), `expected ${Math.floor(MEMBERS / 100)}`);
    }
    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[1]!;
    line('   CREATE TEMP TABLE AS <audience query> (median of 3)', `${median(baselines).toFixed(0)} ms`);
    line('   plan (median of 3)', `${median(plans).toFixed(0)} ms`);
    line('   ratio plan / CREATE TEMP TABLE AS', `${(median(plans) / median(baselines)).toFixed(2)}x`, 'target: <= 3x');

    // 3. Delivery rate against a rate-limited sandbox.
    process.stdout.write('\n3. Delivery to a sandbox limited to 1,000 requests per 3 s\n');
    const limited = new BrazeSandbox({ apiKey: KEY, rateLimit: { limit: 1000, windowMs: 3000 } });
    const limitedUrl = await limited.start();
    try {
      const rows = Math.min(MEMBERS, 225_000); // 3,000 requests of 75: about 9 s at the limit
      const rateDir = audienceFolder('bench_rate', QUERY(rows));
      const [rate, ms] = await timed(() =>
        cliPeakRss(['sync', 'bench_rate', '--audiences', rateDir, '--state-schema', 'bench_rate', '--rate-limit', '1000', '--rate-window', '3', '--concurrency', '8', '--json'], { ...env, BRAZE_REST_ENDPOINT: limitedUrl }),
      );
      const counts = JSON.parse(rate.stdout).audiences[0].counts;
      // The delivery phase: first to last request the sandbox received (planning excluded).
      const first = limited.requests[0]!.at;
      const last = limited.requests[limited.requests.length - 1]!.at;
      const achieved = (limited.requests.length - 1) / ((last - first) / 1000);
      line('   requests sent', `${counts.requests} in ${((last - first) / 1000).toFixed(1)} s of delivery (${(ms / 1000).toFixed(1)} s in all, exit ${rate.code})`);
      line('   achieved rate / limit (333.3 req/s)', `${(achieved / (1000 / 3)).toFixed(3)}`, 'target: >= 0.9');
      line('   requests answered 429', `${((limited.counts.rateLimited / limited.counts.requests) * 100).toFixed(2)}%`, 'target: < 1%');
      line('   every update delivered', `${limited.profiles.size === rows && counts.failed === 0 ? 'yes' : 'NO'} (${limited.profiles.size} profiles)`);
    } finally {
      await limited.stop();
    }
  } finally {
    await sandbox.stop();
    await db.end();
    await server.stop();
  }
}

await main();
