/**
 * Forwarding under hostile conditions, through the CLI (and the library where time must be
 * measured) against real PostgreSQL and a local collector: two runs at once, a wrong URL then
 * the right one, retry waits that must not hold a slot, SIGTERM during a wait, personal data.
 */
import { createServer, type Server } from 'node:http';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildPayload } from '../src/forward/build-payload.js';
import { parseForwardConfig } from '../src/forward/config.js';
import { forwardEvents } from '../src/forward/relay.js';
import { MovableInkClient } from '../src/forward/movable-ink-client.js';
import { RateLimiter } from '../src/http/rate-limiter.js';
import { silentLogger } from '../src/log.js';
import { ConfigError } from '../src/errors.js';
import { createTestDatabase, type TestDatabase } from './helpers/database.js';
import { cli, startCli, waitFor } from './helpers/cli.js';

const AUTH = `Basic ${Buffer.from('mi-user:mi-pass').toString('base64')}`;

/** A collector that answers 404 off its one path and can fail or slow requests. */
class Collector {
  received: Array<Record<string, unknown>> = [];
  attempts = 0;
  latencyMs = 0;
  fault?: (body: Record<string, unknown>, n: number) => number | undefined;
  private server?: Server;
  base = '';
  async start(): Promise<void> {
    this.server = createServer((req, res) => {
      let raw = '';
      req.on('data', (c) => (raw += c));
      req.on('end', async () => {
        const n = ++this.attempts;
        if (req.url !== '/behavioral/right-key') return res.writeHead(404).end('no such key');
        if (req.headers.authorization !== AUTH) return res.writeHead(401).end();
        if (this.latencyMs) await new Promise((r) => setTimeout(r, this.latencyMs));
        const body = JSON.parse(raw) as Record<string, unknown>;
        const status = this.fault?.(body, n);
        if (status) return res.writeHead(status).end(`fault ${status}`);
        this.received.push(body);
        res.writeHead(202).end('{}');
      });
    });
    await new Promise<void>((r) => this.server!.listen(0, '127.0.0.1', r));
    this.base = `http://127.0.0.1:${(this.server!.address() as { port: number }).port}/behavioral/`;
  }
  stop() {
    this.server?.closeAllConnections();
    return new Promise((r) => this.server!.close(r));
  }
}

let t: TestDatabase;
let collector: Collector;
beforeAll(async () => {
  t = await createTestDatabase();
  collector = new Collector();
  await collector.start();
});
afterAll(async () => {
  await collector?.stop();
  await t?.drop();
});

/** A source schema of the test's own with `n` custom events of `users` users, and a config file for it. */
async function source(name: string, n: number, users = n): Promise<string> {
  await t.db.query(`CREATE SCHEMA ${name}`);
  await t.db.query(`CREATE TABLE ${name}.users_behaviors_customevent (id text PRIMARY KEY, user_id text NOT NULL, external_user_id text, "time" bigint, name text,
    properties jsonb, occurred_at timestamptz, source_key text NOT NULL DEFAULT 'test')`);
  await t.db.query(`INSERT INTO ${name}.users_behaviors_customevent (id, user_id, "time", name, properties, occurred_at)
    SELECT 'e' || i, 'u' || (i % ${users}), 1790000000 + i, 'Viewed', jsonb_build_object('n', i), to_timestamp(1790000000 + i) FROM generate_series(1, ${n}) i`);
  const file = join(mkdtempSync(join(tmpdir(), 'bb-fwd-')), 'mi.json');
  writeFileSync(file, JSON.stringify({ source_schema: name, concurrency: 4, rate_limit_per_second: 5000, events: [{ event_type: 'users.behaviors.CustomEvent', name: 'Viewed', properties: ['n'] }] }));
  return file;
}
const env = (key = 'right-key') => ({ DATABASE_URL: t.url, MOVABLE_INK_ENDPOINT: `${collector.base}${key}`, MOVABLE_INK_AUTH: 'mi-user:mi-pass' });
const handled = async (state: string, status = 'sent') =>
  (await t.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${state}.forward_events WHERE status = $1`, [status])).rows[0]!.n;

describe('forward under hostile conditions', () => {
  it('a second forward run at once exits 3 and sends nothing; the first sends each event once', async () => {
    // Two users of 30 events each: one request at a time per user, 100 ms each, about 3 s.
    const file = await source('two_runs', 60, 2);
    collector.received = [];
    collector.latencyMs = 100;
    try {
      const first = startCli(['forward', 'movable-ink', '--config', file, '--state-schema', 'st_two_runs', '--json'], env());
      await waitFor(() => collector.received.length > 0, 'the first run sends', { cli: first });
      const second = await cli(['forward', 'movable-ink', '--config', file, '--state-schema', 'st_two_runs', '--json'], env());
      expect(second.code, second.stderr).toBe(3);
      expect(JSON.parse(second.stdout)).toMatchObject({ status: 'locked', error: expect.stringMatching(/another forward run/) });
      const done = await first.done;
      expect(done.code, done.stderr).toBe(0);
      const ns = collector.received.map((b) => (b.properties as { n: number }).n);
      expect(ns).toHaveLength(60);
      expect(new Set(ns).size).toBe(60);
    } finally {
      collector.latencyMs = 0;
    }
  });

  it('a 404 stops the run and records nothing; with the right URL every event goes; --retry-rejected re-queues rejected ones', async () => {
    const file = await source('wrong_url', 10);
    const state = ['--state-schema', 'st_wrong_url', '--json'];
    collector.received = [];
    const wrong = await cli(['forward', 'movable-ink', '--config', file, ...state], env('wrong-key'));
    expect(wrong.code, wrong.stderr).toBe(4);
    expect(JSON.parse(wrong.stdout)).toMatchObject({ status: 'aborted', events: { rejected: 0 }, error: expect.stringMatching(/answered 404: check MOVABLE_INK_ENDPOINT/) });
    expect(await handled('st_wrong_url', 'rejected')).toBe(0);
    const fixed = await cli(['forward', 'movable-ink', '--config', file, ...state], env());
    expect(fixed.code, fixed.stderr).toBe(0);
    expect(JSON.parse(fixed.stdout).events).toMatchObject({ sent: 10, leftPending: 0 });
    // An event rejected for good earlier (say, under an older version that marked 404s) comes back.
    await t.db.query(`UPDATE st_wrong_url.forward_events SET status = 'rejected', http_status = 404 WHERE event_id IN ('e1', 'e2')`);
    const retry = await cli(['forward', 'movable-ink', '--config', file, '--retry-rejected', ...state], env());
    expect(retry.code, retry.stderr).toBe(0);
    expect(JSON.parse(retry.stdout).events).toMatchObject({ requeued: 2, sent: 2 });
    expect(await handled('st_wrong_url')).toBe(10);
  });

  it('an event with a 9 kB id is sent and recorded once, and blocks nothing; the next run sends nothing more', async () => {
    const file = await source('long_id', 3);
    // Shaped as Currents creates event tables since migration 0006: the key is id_key, so the id may be long.
    await t.db.query(`ALTER TABLE long_id.users_behaviors_customevent DROP CONSTRAINT users_behaviors_customevent_pkey,
      ADD COLUMN id_key text GENERATED ALWAYS AS (CASE WHEN octet_length(id) > 1000 THEN 'md5:' || md5(id) ELSE id END) STORED PRIMARY KEY`);
    const longId = Array.from({ length: 9000 }, (_, i) => String.fromCharCode(33 + ((i * 7919) % 90))).join('');
    await t.db.query(`INSERT INTO long_id.users_behaviors_customevent (id, user_id, "time", name, properties, occurred_at) VALUES ($1, 'u0', 1790000000, 'Viewed', '{"n": 99}', to_timestamp(1790000000))`, [longId]);
    const state = ['--state-schema', 'st_long_id', '--json'];
    collector.received = [];
    const first = await cli(['forward', 'movable-ink', '--config', file, ...state], env());
    expect(first.code, first.stderr).toBe(0);
    expect(JSON.parse(first.stdout).events).toMatchObject({ pending: 4, sent: 4, leftPending: 0 });
    expect(collector.received.map((b) => (b.properties as { n: number }).n).sort((a, b) => a - b)).toEqual([1, 2, 3, 99]);
    expect((await t.db.query(`SELECT event_id = $1 AS same, event_key FROM st_long_id.forward_events WHERE length(event_id) > 1000`, [longId])).rows).toEqual([
      { same: true, event_key: expect.stringMatching(/^md5:[0-9a-f]{32}$/) },
    ]);
    const second = await cli(['forward', 'movable-ink', '--config', file, ...state], env());
    expect(second.code, second.stderr).toBe(0);
    expect(JSON.parse(second.stdout).events).toMatchObject({ pending: 0, sent: 0 });
    expect(collector.received).toHaveLength(4);
    expect(await handled('st_long_id')).toBe(4);
  });

  it('a 3xx is a wrong URL too: nothing recorded, exit 4', async () => {
    const file = await source('redirect', 3);
    collector.fault = () => 301;
    try {
      const r = await cli(['forward', 'movable-ink', '--config', file, '--state-schema', 'st_redirect', '--json'], env());
      expect(r.code, r.stderr).toBe(4);
      expect(JSON.parse(r.stdout).error).toMatch(/answered 301/);
      expect(await handled('st_redirect', 'rejected')).toBe(0);
    } finally {
      collector.fault = undefined;
    }
  });

  it('retry waits do not hold a slot: 12% transient faults on first attempts add about one wait, not one per fault', async () => {
    const file = await source('faults', 400);
    const config = parseForwardConfig(JSON.parse((await import('node:fs')).readFileSync(file, 'utf8')));
    const run = async (state: string, faults: boolean) => {
      await t.db.query(`CREATE SCHEMA IF NOT EXISTS ${state}`);
      const { migrate } = await import('../src/db/migrate.js');
      await migrate(t.db, state);
      const seen = new Set<string>();
      collector.fault = faults
        ? (body) => {
            const n = (body.properties as { n: number }).n;
            const first = !seen.has(String(n));
            seen.add(String(n));
            return first && n % 25 < 3 ? (n % 2 ? 429 : 503) : undefined;
          }
        : undefined;
      const client = new MovableInkClient({ endpoint: `${collector.base}right-key`, auth: 'mi-user:mi-pass', rateLimiter: new RateLimiter({ limit: 100_000, windowMs: 1000 }), backoffMs: 1500, random: () => 1 });
      const started = Date.now();
      const summary = await forwardEvents(t.db, silentLogger, { config, stateSchema: state, client, dryRun: false });
      return { summary, ms: Date.now() - started };
    };
    collector.latencyMs = 5;
    try {
      const clean = await run('st_faults_clean', false);
      const faulty = await run('st_faults_faulty', true);
      expect(clean.summary.events.sent).toBe(400);
      expect(faulty.summary.events).toMatchObject({ sent: 400, gaveUp: 0 });
      expect(faulty.summary.retries).toBe(48);
      // 48 waits of 1.5 s holding one of 4 slots would add about 18 s; waiting outside the slots
      // adds about one wait. Two runs timed apart: the margin covers a machine that gets busier between them.
      expect(faulty.ms - clean.ms).toBeLessThan(6000);
    } finally {
      collector.latencyMs = 0;
      collector.fault = undefined;
    }
  });

  it('SIGTERM during a retry wait ends the run at once with 143; the event stays pending', async () => {
    const file = await source('sigterm', 1);
    collector.fault = () => 503;
    try {
      const run = startCli(['forward', 'movable-ink', '--config', file, '--state-schema', 'st_sigterm'], env());
      const before = collector.attempts;
      await waitFor(() => collector.attempts > before, 'the first attempt', { cli: run });
      await new Promise((r) => setTimeout(r, 200));
      const signalled = Date.now();
      run.child.kill('SIGTERM');
      const done = await run.done;
      expect(done.code).toBe(143);
      expect(Date.now() - signalled).toBeLessThan(5000);
      expect(await handled('st_sigterm')).toBe(0);
    } finally {
      collector.fault = undefined;
    }
  });

  it('"all" drops personal data at any depth and keeps nested nulls; a listed property keeps its nested nulls', () => {
    const config = parseForwardConfig({ events: [{ event_type: 'users.behaviors.CustomEvent', name: 'X', properties: 'all' }, { event_type: 'users.behaviors.Purchase', properties: ['cart'] }] });
    const props = {
      sku: 'A-1',
      order: '100200300400',
      e_mail: 'a@b.example',
      contact: 'someone@example.com',
      nested: { phone: '123', note: null, deeper: { Mobile_Number: 'x', fax: '+49 30 1234567', keep: 'ok', list: ['z@y.example', 'fine'] } },
      call: '(030) 123-4567',
    };
    const payload = buildPayload(config, config.rules[0]!, { user_id: 'u', time_ms: '1', timezone: null, props, email: null }, null);
    expect(payload.properties).toEqual({ sku: 'A-1', order: '100200300400', nested: { note: null, deeper: { keep: 'ok', list: ['fine'] } } });
    const listed = buildPayload(config, config.rules[1]!, { user_id: 'u', time_ms: '1', timezone: null, props: { cart: { coupon: null, items: 2 }, other: null }, email: null }, null);
    expect(listed.properties).toEqual({ cart: { coupon: null, items: 2 } });
  });

  it('config values are type-checked and every problem is listed', () => {
    let error: unknown;
    try {
      parseForwardConfig({ destination: 5, source_schema: 'Bad Schema', events: [{ event_type: 'users.behaviors.CustomEvent', name: 'A', identify: 'yes' }, { event_type: 'users.behaviors.Purchase', name: 5 }] });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const problems = (error as ConfigError).problems.join('\n');
    expect(problems).toMatch(/destination must be/);
    expect(problems).toMatch(/source_schema must be/);
    expect(problems).toMatch(/events\[0\]: identify must be true or false; got "yes"/);
    expect(problems).toMatch(/events\[1\]: name must be the Braze event name as a string; got 5/);
  });
});
