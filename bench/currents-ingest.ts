/**
 * Currents ingestion (part of `npm run bench`): figures, not tests.
 *
 *   1. 1,000,000 users.messages.email.Send events (Braze's field list, deflate, 10 files):
 *      ingest time and rows/s, against COPY of the same rows as TSV into an identical table
 *      (psql's \copy when psql is installed, else the same COPY FROM STDIN from Node).
 *   2. Peak RSS of the CLI ingesting one 10 MB file vs one 200 MB file (target: flat).
 *
 * BENCH_EVENTS scales part 1 down (default 1000000). The files are read through the file://
 * source so that the figure is the loader's, not a local S3 server's.
 */
import { execFileSync, spawn } from 'node:child_process';
import { createReadStream, createWriteStream, mkdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { once } from 'node:events';
import avro from 'avsc';
import { startEmbeddedPostgres } from '../src/db/embedded.js';
import { copyFrom, createDatabase } from '../src/db/pool.js';
import { migrate } from '../src/db/migrate.js';
import { mapSchema } from '../src/currents/map-schema.js';
import { emailSendV2 } from '../test/helpers/avro.js';

const EVENTS = Number(process.env.BENCH_EVENTS ?? 1_000_000);
const FILES = 10;
const root = process.cwd();
const work = join(root, '.braze-bridge', 'bench-currents');
const SEND = 'users.messages.email.Send';

function line(label: string, value: string, target = '') {
  process.stdout.write(`${label.padEnd(58)} ${value.padEnd(30)} ${target}\n`);
}

const type = avro.Type.forSchema(emailSendV2 as avro.Schema);
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

/** Write an Avro container file of `count` records starting at `from`. */
async function writeAvro(path: string, from: number, count: number, codec: 'null' | 'deflate') {
  const out = createWriteStream(path);
  const encoder = new avro.streams.BlockEncoder(type, { codec, blockSize: 256 * 1024 } as never);
  encoder.pipe(out);
  for (let i = from; i < from + count; i++) {
    if (!encoder.write(record(i))) await once(encoder, 'drain');
  }
  encoder.end();
  await once(out, 'finish');
}

function cliRun(args: string[], env: Record<string, string>): Promise<{ code: number | null; peakMb: number; ms: number; stdout: string }> {
  const started = process.hrtime.bigint();
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
      resolve({ code, peakMb: peak, ms: Number(process.hrtime.bigint() - started) / 1e6, stdout });
    });
  });
}

const key = (hour: number, name: string) =>
  `currents/dataexport.prod-01.S3.integration.bench/event_type=${SEND}/date=2026-11-01-${String(hour).padStart(2, '0')}/511/prod-01/${name}.avro`;

async function main() {
  process.stdout.write(`braze-bridge bench (Currents): ${EVENTS.toLocaleString('en')} events in ${FILES} files, node ${process.version}\n\n`);
  rmSync(work, { recursive: true, force: true });
  const server = await startEmbeddedPostgres({ dir: join(root, '.braze-bridge', 'bench', 'pg') });
  await server.ensureDatabase('bench_currents');
  const url = server.url('bench_currents');
  const db = createDatabase({ connectionString: url, max: 4 });
  try {
    await db.query('DROP SCHEMA IF EXISTS braze_bridge CASCADE; DROP SCHEMA IF EXISTS braze_currents CASCADE; DROP TABLE IF EXISTS bench_copy');
    await migrate(db, 'braze_bridge');

    const source = join(work, 'big');
    const per = Math.ceil(EVENTS / FILES);
    for (let f = 0; f < FILES; f++) {
      mkdirSync(join(source, key(f, '').replace(/\/[^/]*$/, '')), { recursive: true });
      await writeAvro(join(source, key(f, `0+0+${f * per}`)), f * per, Math.min(per, EVENTS - f * per), 'deflate');
    }
    line('files written (deflate)', `${FILES}`);
    const env = { DATABASE_URL: url };

    process.stdout.write('\n1. Ingest vs COPY of the same rows as TSV (median of 3, alternating)\n');
    const columns = mapSchema(type);
    const tsv = join(work, 'rows.tsv');
    const out = createWriteStream(tsv);
    for (let i = 0; i < EVENTS; i++) {
      const r = record(i) as Record<string, unknown>;
      const cells = columns.map((c) => c.format(r[c.name], { nul: 0 }));
      cells.push(new Date((r.time as number) * 1000).toISOString(), key(0, 'x'));
      if (!out.write(`${cells.join('\t')}\n`)) await once(out, 'drain');
    }
    out.end();
    await once(out, 'finish');
    const cols = [...columns.map((c) => `"${c.name}"`), 'occurred_at', 'source_key'].join(', ');
    let psql = false;
    try {
      execFileSync('psql', ['--version'], { stdio: 'ignore' });
      psql = true;
    } catch {
      /* not installed */
    }
    const ingestMs: number[] = [];
    const copyMs: number[] = [];
    let rows = 0;
    for (let rep = 0; rep < 3; rep++) {
      await db.query('DROP SCHEMA IF EXISTS braze_currents CASCADE; TRUNCATE braze_bridge.currents_files; DROP TABLE IF EXISTS bench_copy');
      const run = await cliRun(['currents', 'ingest', '--source', `file://${source}`, '--json'], env);
      ingestMs.push(run.ms);
      rows = JSON.parse(run.stdout).rows;
      // The baseline table is identical to the event table: same columns, key and index.
      await db.query('CREATE TABLE bench_copy (LIKE braze_currents.users_messages_email_send INCLUDING ALL)');
      await db.query('CHECKPOINT');
      const t0 = process.hrtime.bigint();
      if (psql) {
        execFileSync('psql', [url, '-q', '-c', `\\copy bench_copy (${cols}) FROM '${tsv}'`], { stdio: 'inherit' });
      } else {
        await db.withConnection((conn) =>
          copyFrom(conn, `COPY bench_copy (${cols}) FROM STDIN`, (async function* () {
            for await (const chunk of createReadStream(tsv, { encoding: 'utf8', highWaterMark: 1 << 20 })) yield chunk as string;
          })()),
        );
      }
      copyMs.push(Number(process.hrtime.bigint() - t0) / 1e6);
      await db.query('CHECKPOINT');
    }
    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[1]!;
    line('   braze-bridge currents ingest (CLI, 4 files at once)', `${(median(ingestMs) / 1000).toFixed(1)} s`);
    line('   rows loaded', `${rows.toLocaleString('en')}`, `expected ${EVENTS.toLocaleString('en')}`);
    line('   rows/s', `${Math.round(rows / (median(ingestMs) / 1000)).toLocaleString('en')}`);
    line(`   ${psql ? "psql's \\copy" : 'COPY FROM STDIN from Node (no psql here)'} of the same rows`, `${(median(copyMs) / 1000).toFixed(1)} s (${(statSync(tsv).size / 1e6).toFixed(0)} MB TSV)`);
    line('   ratio ingest / copy', `${(median(ingestMs) / median(copyMs)).toFixed(2)}x`, 'target: <= 1.5x');

    process.stdout.write('\n2. Peak RSS of the CLI for one small and one large file (codec null)\n');
    for (const [label, count] of [['10 MB', 62_000], ['200 MB', 1_240_000]] as const) {
      const dir = join(work, `rss-${count}`);
      const k = key(20, `rss-${count}`);
      mkdirSync(join(dir, k.replace(/\/[^/]*$/, '')), { recursive: true });
      await writeAvro(join(dir, k), 10_000_000 + count, count, 'null');
      const size = statSync(join(dir, k)).size / 1e6;
      const r = await cliRun(['currents', 'ingest', '--source', `file://${dir}`, '--json', '--concurrency', '1'], env);
      line(`   one ${label} file (${size.toFixed(0)} MB, ${count.toLocaleString('en')} events)`, `${r.peakMb.toFixed(0)} MB peak RSS (exit ${r.code})`, label === '200 MB' ? 'target: flat' : '');
    }
  } finally {
    await db.end();
    await server.stop();
    rmSync(work, { recursive: true, force: true });
  }
}

await main();
