/**
 * Currents ingestion (part of `npm run bench`): figures, not tests.
 *
 *   1. 1,000,000 users.messages.email.Send events (Braze's field list, deflate, 10 files) of
 *      which 1% repeat an event already delivered (at-least-once duplicates: the same event id
 *      again, half within the same file, half from an earlier file): ingest time, rows/s and
 *      CPU, against psql's \copy of the unique rows as TSV into an identical table (same
 *      columns, key and event-time index), timed as a process in the same run.
 *   2. Peak RSS of the CLI ingesting one 10 MB file vs one 200 MB file (target: flat).
 *   3. Many small files, as Braze's buckets hold them (a file per partition every few minutes):
 *      500 files of 200 events of one type (so one worker, the files one after the other): the
 *      time and the CLI's CPU per file, less a second run that finds nothing to load (the
 *      process start and the listing). No target; a figure to watch, since what a file costs
 *      beyond its rows is paid per file.
 *
 * All parts run on the embedded server and, when BENCH_DATABASE_URL is set, on that server
 * too (a regular one, fsync on: the figure the target is about). BENCH_EVENTS scales
 * part 1 down (default 1000000). The files are read through the file:// source so that the
 * figure is the loader's, not a local S3 server's. The CLI is built first, so the figures are
 * those of the source as it is.
 */
import { execFileSync, spawn } from 'node:child_process';
import { createWriteStream, mkdirSync, readFileSync, rmSync, statSync, type WriteStream } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import avro from 'avsc';
import { startEmbeddedPostgres } from '../src/db/embedded.js';
import { createDatabase } from '../src/db/pool.js';
import { migrate } from '../src/db/migrate.js';
import { mapSchema } from '../src/currents/map-schema.js';
import { emailSendV2 } from '../test/helpers/avro.js';

const EVENTS = Number(process.env.BENCH_EVENTS ?? 1_000_000);
const FILES = 10;
const REPS = 3;
const root = process.cwd();
const work = join(root, '.braze-bridge', 'bench-currents');
const SEND = 'users.messages.email.Send';
const TICKS = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;

function line(label: string, value: string, target = '') {
  process.stdout.write(`${label.padEnd(58)} ${value.padEnd(34)} ${target}\n`);
}

const type = avro.Type.forSchema(emailSendV2 as avro.Schema);
/** The i-th distinct event. */
function record(i: number) {
  return {
    id: `a1b2c3d4-${String(i).padStart(12, '0')}`,
    user_id: `5f1c${(i % 250_000).toString(16).padStart(20, '0')}`,
    external_user_id: i % 7 === 0 ? null : `customer-${i % 250_000}`,
    time: 1_780_000_000 + Math.floor(i / 10),
    timezone: 'Europe/Berlin',
    campaign_id: `camp-${i % 40}`,
    campaign_name: `Campaign ${i % 40}`,
    from_domain: 'mail.example.com',
    email_address: `customer${i % 250_000}@example.com`,
    send_id: `send-${i}`,
  };
}

/** A small deterministic PRNG (mulberry32), so every run repeats the same events. */
function random(seed: number) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const key = (hour: number, name: string) =>
  `currents/dataexport.prod-01.S3.integration.bench/event_type=${SEND}/date=2026-11-01-${String(hour).padStart(2, '0')}/511/prod-01/${name}.avro`;

async function write(out: WriteStream | avro.streams.BlockEncoder, data: unknown) {
  if (!out.write(data as never)) await once(out, 'drain');
}

/**
 * The 10 deflate files and the TSV of their unique rows (the baseline's input). Every 100th
 * event repeats an earlier one: alternately one of its own file and one of an earlier file.
 */
async function writeEventFiles(source: string, tsv: string): Promise<{ unique: number; repeats: number }> {
  const columns = mapSchema(type);
  const out = createWriteStream(tsv);
  const rand = random(13);
  const per = Math.ceil(EVENTS / FILES);
  let unique = 0;
  let repeats = 0;
  for (let f = 0; f < FILES; f++) {
    const k = key(f, `0+0+${f * per}`);
    mkdirSync(join(source, k.replace(/\/[^/]*$/, '')), { recursive: true });
    const file = createWriteStream(join(source, k));
    const encoder = new avro.streams.BlockEncoder(type, { codec: 'deflate', blockSize: 256 * 1024 } as never);
    encoder.pipe(file);
    const firstOfFile = unique;
    for (let p = f * per; p < Math.min(EVENTS, (f + 1) * per); p++) {
      if (p % 100 === 99 && unique > firstOfFile) {
        const fromEarlierFile = repeats % 2 === 1 && firstOfFile > 0;
        const i = fromEarlierFile ? Math.floor(rand() * firstOfFile) : firstOfFile + Math.floor(rand() * (unique - firstOfFile));
        await write(encoder, record(i));
        repeats++;
        continue;
      }
      const r = record(unique++) as Record<string, unknown>;
      await write(encoder, r);
      const cells = columns.map((c) => c.format(r[c.name], { nul: 0 }));
      cells.push(new Date((r.time as number) * 1000).toISOString(), k);
      await write(out, `${cells.join('\t')}\n`);
    }
    encoder.end();
    await once(file, 'finish');
  }
  out.end();
  await once(out, 'finish');
  return { unique, repeats };
}

/** CPU seconds (user + system) of this process's children that have ended, from /proc. */
function childrenCpu(): number {
  const fields = readFileSync('/proc/self/stat', 'utf8').replace(/^.*\) /, '').split(' ');
  return (Number(fields[13]) + Number(fields[14])) / TICKS; // cutime, cstime
}

interface Run {
  code: number | null;
  peakMb: number;
  ms: number;
  cpuS: number;
  stdout: string;
}

function cliRun(args: string[], env: Record<string, string>): Promise<Run> {
  const started = process.hrtime.bigint();
  const cpu0 = childrenCpu();
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [join(root, 'bin', 'braze-bridge.js'), ...args], { env: { ...process.env, ...env, LOG_LEVEL: 'warn' }, stdio: ['ignore', 'pipe', 'inherit'] });
    let peak = 0;
    let stdout = '';
    child.stdout.on('data', (d) => (stdout += d));
    const timer = setInterval(() => {
      try {
        const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'));
        if (m) peak = Math.max(peak, Number(m[1]) / 1024);
      } catch {
        /* exited */
      }
    }, 50);
    child.on('close', (code) => {
      clearInterval(timer);
      resolve({ code, peakMb: peak, ms: Number(process.hrtime.bigint() - started) / 1e6, cpuS: childrenCpu() - cpu0, stdout });
    });
  });
}

/** psql's \copy of the TSV, timed as a process, as the issue measures it. */
function psqlCopy(url: string, table: string, cols: string, tsv: string): { ms: number; cpuS: number } {
  const cpu0 = childrenCpu();
  const t0 = process.hrtime.bigint();
  execFileSync('psql', [url, '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-c', `\\copy ${table} (${cols}) FROM '${tsv}'`], { stdio: 'inherit' });
  return { ms: Number(process.hrtime.bigint() - t0) / 1e6, cpuS: childrenCpu() - cpu0 };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** Both parts on one server. */
async function benchServer(label: string, url: string, data: { source: string; tsv: string; unique: number; repeats: number }) {
  process.stdout.write(`\n== ${label}\n`);
  const db = createDatabase({ connectionString: url, max: 2 });
  try {
    const settings = await db.query<{ v: string; fsync: string; sc: string }>(`SELECT version() AS v, current_setting('fsync') AS fsync, current_setting('synchronous_commit') AS sc`);
    const s = settings.rows[0]!;
    line('   server', `${s.v.split(' ').slice(0, 2).join(' ')}, fsync ${s.fsync}, synchronous_commit ${s.sc}`);
    const reset = () => db.query('DROP SCHEMA IF EXISTS braze_bridge CASCADE; DROP SCHEMA IF EXISTS braze_currents CASCADE; DROP TABLE IF EXISTS bench_copy');
    const env = { DATABASE_URL: url };
    const cols = [...mapSchema(type).map((c) => `"${c.name}"`), 'occurred_at', 'source_key'].join(', ');

    process.stdout.write(`1. Ingest (1% repeated events) vs psql \\copy of the unique rows (median of ${REPS}, alternating)\n`);
    const ingest: Run[] = [];
    const copy: Array<{ ms: number; cpuS: number }> = [];
    let summary: { rows: number; duplicates: number; files: { loaded: number; failed: number } } | undefined;
    for (let rep = 0; rep < REPS; rep++) {
      await reset();
      await migrate(db, 'braze_bridge');
      await db.query('CHECKPOINT');
      const run = await cliRun(['currents', 'ingest', '--source', `file://${data.source}`, '--json'], env);
      if (run.code !== 0) throw new Error(`currents ingest exited ${run.code}`);
      ingest.push(run);
      summary = JSON.parse(run.stdout);
      // The baseline table is identical to the event table: same columns, key and index.
      await db.query('CREATE TABLE bench_copy (LIKE braze_currents.users_messages_email_send INCLUDING ALL)');
      await db.query('CHECKPOINT');
      copy.push(psqlCopy(url, 'bench_copy', cols, data.tsv));
      const n = await db.query<{ n: number }>('SELECT count(*)::int AS n FROM bench_copy');
      if (n.rows[0]!.n !== data.unique) throw new Error(`\\copy loaded ${n.rows[0]!.n} rows, expected ${data.unique}`);
    }
    const ms = median(ingest.map((r) => r.ms));
    const copyMs = median(copy.map((c) => c.ms));
    line('   braze-bridge currents ingest (CLI, --concurrency 4)', `${(ms / 1000).toFixed(2)} s (runs: ${ingest.map((r) => (r.ms / 1000).toFixed(2)).join(', ')})`);
    line('   rows loaded / duplicates skipped', `${summary!.rows.toLocaleString('en')} / ${summary!.duplicates.toLocaleString('en')}`, `expected ${data.unique.toLocaleString('en')} / ${data.repeats.toLocaleString('en')}`);
    line('   rows/s', `${Math.round(summary!.rows / (ms / 1000)).toLocaleString('en')}`);
    line('   CPU of the ingest process (user + system)', `${median(ingest.map((r) => r.cpuS)).toFixed(1)} s`);
    line("   psql's \\copy of the unique rows (process)", `${(copyMs / 1000).toFixed(2)} s (runs: ${copy.map((c) => (c.ms / 1000).toFixed(2)).join(', ')})`, `${(statSync(data.tsv).size / 1e6).toFixed(0)} MB TSV`);
    line('   CPU of the psql process', `${median(copy.map((c) => c.cpuS)).toFixed(1)} s`);
    line('   ratio ingest / copy (medians)', `${(ms / copyMs).toFixed(2)}x`, 'target: <= 1.5x (stretch 1.2x)');
    line('   ratio per run', ingest.map((r, i) => `${(r.ms / copy[i]!.ms).toFixed(2)}x`).join(', '));
    if (summary!.rows !== data.unique || summary!.duplicates !== data.repeats) throw new Error('the ingest did not load exactly the unique events');

    process.stdout.write('2. Peak RSS of the CLI for one small and one large file (codec null)\n');
    await reset();
    await migrate(db, 'braze_bridge');
    for (const [size, count] of [['10 MB', 62_000], ['200 MB', 1_240_000]] as const) {
      const dir = join(work, `rss-${count}`);
      const k = key(20, `rss-${count}`);
      const file = join(dir, k);
      const bytes = statSync(file).size / 1e6;
      const r = await cliRun(['currents', 'ingest', '--source', `file://${dir}`, '--json', '--concurrency', '1'], env);
      line(`   one ${size} file (${bytes.toFixed(0)} MB, ${count.toLocaleString('en')} events)`, `${r.peakMb.toFixed(0)} MB peak RSS (exit ${r.code})`, size === '200 MB' ? 'target: flat' : '');
    }

    process.stdout.write(`3. Many small files: ${SMALL_FILES} files of ${SMALL_EVENTS} events of one event type (deflate)\n`);
    await reset();
    await migrate(db, 'braze_bridge');
    await db.query('CHECKPOINT');
    const smallArgs = ['currents', 'ingest', '--source', `file://${join(work, 'small')}`, '--json'];
    const small = await cliRun(smallArgs, env);
    if (small.code !== 0) throw new Error(`currents ingest of the small files exited ${small.code}`);
    const loaded = JSON.parse(small.stdout) as { rows: number; files: { loaded: number } };
    if (loaded.files.loaded !== SMALL_FILES || loaded.rows !== SMALL_FILES * SMALL_EVENTS) throw new Error('the small files did not load exactly');
    // Nothing left to load: the process start, the listing and the run's records.
    const fixed = await cliRun(smallArgs, env);
    const perFile = (total: number, base: number) => `${((1000 * (total - base)) / SMALL_FILES).toFixed(1)} ms per file`;
    line('   ingest (CLI; one type, so one worker)', `${(small.ms / 1000).toFixed(2)} s, ${perFile(small.ms / 1000, fixed.ms / 1000)}`, `a run with nothing to load: ${(fixed.ms / 1000).toFixed(2)} s`);
    line('   CPU of the ingest process (user + system)', `${small.cpuS.toFixed(1)} s, ${perFile(small.cpuS, fixed.cpuS)}`, `with nothing to load: ${fixed.cpuS.toFixed(2)} s`);
    await reset();
  } finally {
    await db.end();
  }
}

const SMALL_FILES = 500;
const SMALL_EVENTS = 200;

/** Part 3's files: distinct events, ten files an hour. */
async function writeSmallFiles() {
  for (let f = 0; f < SMALL_FILES; f++) {
    const k = key(0, `small-${f}`).replace('date=2026-11-01-00', `date=2026-11-${String(2 + Math.floor(f / 240)).padStart(2, '0')}-${String(Math.floor(f / 10) % 24).padStart(2, '0')}`);
    const dir = join(work, 'small');
    mkdirSync(join(dir, k.replace(/\/[^/]*$/, '')), { recursive: true });
    const file = createWriteStream(join(dir, k));
    const encoder = new avro.streams.BlockEncoder(type, { codec: 'deflate' } as never);
    encoder.pipe(file);
    for (let i = 20_000_000 + f * SMALL_EVENTS; i < 20_000_000 + (f + 1) * SMALL_EVENTS; i++) await write(encoder, record(i));
    encoder.end();
    await once(file, 'finish');
  }
}

async function writeRssFiles() {
  for (const count of [62_000, 1_240_000]) {
    const k = key(20, `rss-${count}`);
    const dir = join(work, `rss-${count}`);
    mkdirSync(join(dir, k.replace(/\/[^/]*$/, '')), { recursive: true });
    const file = createWriteStream(join(dir, k));
    const encoder = new avro.streams.BlockEncoder(type, { codec: 'null', blockSize: 256 * 1024 } as never);
    encoder.pipe(file);
    for (let i = 10_000_000 + count; i < 10_000_000 + 2 * count; i++) await write(encoder, record(i));
    encoder.end();
    await once(file, 'finish');
  }
}

async function main() {
  const regular = process.env.BENCH_DATABASE_URL;
  process.stdout.write(`braze-bridge bench (Currents): ${EVENTS.toLocaleString('en')} events in ${FILES} files, node ${process.version}, load average ${loadavg()[0]!.toFixed(2)}\n`);
  execFileSync(process.execPath, [join('node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json'], { stdio: 'inherit' });
  rmSync(work, { recursive: true, force: true });
  const source = join(work, 'big');
  const tsv = join(work, 'unique-rows.tsv');
  const { unique, repeats } = await writeEventFiles(source, tsv);
  await writeRssFiles();
  await writeSmallFiles();
  line('files written (deflate)', `${FILES}`, `${repeats.toLocaleString('en')} repeated events, ${unique.toLocaleString('en')} unique`);
  const server = await startEmbeddedPostgres({ dir: join(root, '.braze-bridge', 'bench', 'pg') });
  try {
    await server.ensureDatabase('bench_currents');
    await benchServer('embedded PostgreSQL (fsync off)', server.url('bench_currents'), { source, tsv, unique, repeats });
  } finally {
    await server.stop();
  }
  if (regular) await benchServer(`BENCH_DATABASE_URL (${new URL(regular).host})`, regular, { source, tsv, unique, repeats });
  else process.stdout.write('\n(set BENCH_DATABASE_URL to a regular server to measure there too)\n');
  rmSync(work, { recursive: true, force: true });
}

await main();
