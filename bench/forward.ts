/**
 * Forwarding (`npm run bench:forward`): figures, not tests. A local collector that accepts at
 * most LIMIT requests per second (429 with Retry-After: 1 beyond it) and answers in 5 ms;
 * 1,440 events of 360 users relayed at concurrency 8, as `forward movable-ink` does:
 *
 *   1. events/s without faults, and as a share of the collector's limit;
 *   2. the same with 5% transient faults (503) on first attempts, 2 s backoff: the run should
 *      take about one backoff longer, not one per fault divided by the concurrency.
 *
 * BENCH_FORWARD_EVENTS and BENCH_FORWARD_LIMIT change the size and the limit.
 */
import { createServer } from 'node:http';
import { join } from 'node:path';
import { startEmbeddedPostgres } from '../src/db/embedded.js';
import { createDatabase } from '../src/db/pool.js';
import { migrate } from '../src/db/migrate.js';
import { parseForwardConfig } from '../src/forward/config.js';
import { forwardEvents } from '../src/forward/relay.js';
import { MovableInkClient } from '../src/forward/movable-ink-client.js';
import { RateLimiter } from '../src/http/rate-limiter.js';
import { silentLogger } from '../src/log.js';

const EVENTS = Number(process.env.BENCH_FORWARD_EVENTS ?? 1440);
const LIMIT = Number(process.env.BENCH_FORWARD_LIMIT ?? 400);
const BACKOFF_MS = 2000;
const work = join(process.cwd(), '.braze-bridge', 'bench');

async function main() {
  process.stdout.write(`braze-bridge forward bench: ${EVENTS} events, collector limit ${LIMIT}/s, node ${process.version}\n\n`);
  const server = await startEmbeddedPostgres({ dir: join(work, 'pg') });
  await server.ensureDatabase('bench');
  const db = createDatabase({ connectionString: server.url('bench'), max: 16 });
  let faultRate = 0;
  const seen = new Set<string>();
  let windowStart = Date.now();
  let inWindow = 0;
  const collector = createServer((req, res) => {
    let raw = '';
    req.on('data', (c) => (raw += c));
    req.on('end', () =>
      setTimeout(() => {
        const now = Date.now();
        if (now - windowStart >= 1000) {
          windowStart = now;
          inWindow = 0;
        }
        if (++inWindow > LIMIT) return res.writeHead(429, { 'retry-after': '1' }).end();
        const id = String((JSON.parse(raw) as { properties: { n: number } }).properties.n);
        const first = !seen.has(id);
        seen.add(id);
        if (first && Math.random() < faultRate) return res.writeHead(503).end();
        res.writeHead(202).end('{}');
      }, 5),
    );
  });
  await new Promise<void>((r) => collector.listen(0, '127.0.0.1', r));
  const endpoint = `http://127.0.0.1:${(collector.address() as { port: number }).port}/behavioral/bench`;
  try {
    await db.query(`DROP SCHEMA IF EXISTS bench_fwd CASCADE`);
    await db.query(`CREATE SCHEMA bench_fwd`);
    await db.query(`CREATE TABLE bench_fwd.users_behaviors_customevent (id text PRIMARY KEY, user_id text NOT NULL, external_user_id text, "time" bigint, name text, properties jsonb, occurred_at timestamptz, source_key text NOT NULL DEFAULT 'bench')`);
    await db.query(`INSERT INTO bench_fwd.users_behaviors_customevent (id, user_id, "time", name, properties, occurred_at)
      SELECT 'e' || i, 'u' || (i % 360), 1790000000 + i, 'Viewed', jsonb_build_object('n', i), to_timestamp(1790000000 + i) FROM generate_series(1, ${EVENTS}) i`);
    const config = parseForwardConfig({ source_schema: 'bench_fwd', concurrency: 8, rate_limit_per_second: LIMIT, events: [{ event_type: 'users.behaviors.CustomEvent', name: 'Viewed', properties: ['n'] }] });
    const run = async (state: string, faults: number) => {
      await db.query(`DROP SCHEMA IF EXISTS ${state} CASCADE`);
      await migrate(db, state);
      faultRate = faults;
      seen.clear();
      const client = new MovableInkClient({ endpoint, auth: 'bench:bench', rateLimiter: new RateLimiter({ limit: LIMIT, windowMs: 1000, reserve: 8 }), backoffMs: BACKOFF_MS });
      const started = Date.now();
      const s = await forwardEvents(db, silentLogger, { config, stateSchema: state, client, dryRun: false });
      const seconds = (Date.now() - started) / 1000;
      return { s, seconds, rate: s.events.sent / seconds };
    };
    const clean = await run('bench_fwd_clean', 0);
    process.stdout.write(`1. no faults:        ${clean.s.events.sent} sent in ${clean.seconds.toFixed(2)} s = ${clean.rate.toFixed(0)} events/s (${((clean.rate / LIMIT) * 100).toFixed(0)}% of the collector's limit), ${clean.s.rateLimited} 429s\n`);
    const faulty = await run('bench_fwd_faults', 0.05);
    process.stdout.write(
      `2. 5% 503s:          ${faulty.s.events.sent} sent in ${faulty.seconds.toFixed(2)} s = ${faulty.rate.toFixed(0)} events/s, ${faulty.s.retries} retries; ` +
        `extra time ${(faulty.seconds - clean.seconds).toFixed(2)} s (one backoff is ${(BACKOFF_MS / 1000).toFixed(1)} s; waits holding slots would add about ${((faulty.s.retries * BACKOFF_MS) / 8 / 1000).toFixed(1)} s)\n`,
    );
  } finally {
    collector.closeAllConnections();
    await new Promise((r) => collector.close(r));
    await db.end();
    await server.stop();
  }
}

main().catch((error) => {
  process.stderr.write(`${(error as Error).stack}\n`);
  process.exitCode = 1;
});
