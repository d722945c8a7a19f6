import { createHash } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ingest } from '../src/currents/ingest.js';
import { openSource } from '../src/currents/source/open-source.js';
import { parseForwardConfig, snakeCase } from '../src/forward/config.js';
import { buildPayload } from '../src/forward/build-payload.js';
import { forwardOutcome } from '../src/forward/forward-outcome.js';
import { forwardEvents, type ForwardSummary } from '../src/forward/relay.js';
import { MovableInkClient } from '../src/forward/movable-ink-client.js';
import { RateLimiter } from '../src/http/rate-limiter.js';
import { silentLogger } from '../src/log.js';
import { createTestDatabase, type TestDatabase } from './helpers/database.js';
import { currentsKey, customEvent, encodeAvro, purchase, writeObject } from './helpers/avro.js';
import { cli, startCli } from './helpers/cli.js';
import { startWebhook } from './helpers/webhook.js';

let t: TestDatabase;
let collector: Collector;
const T0 = 1_790_000_000;

/** A stand-in for Movable Ink's collector: checks Basic auth and payload shape, injects faults. */
class Collector {
  readonly received: Array<Record<string, unknown>> = [];
  fault?: (body: Record<string, unknown>, n: number) => { status: number; headers?: Record<string, string>; delayMs?: number } | undefined;
  private n = 0;
  private server?: Server;
  latencyMs = 0;
  async start(): Promise<string> {
    this.server = createServer((req, res) => {
      let raw = '';
      req.on('data', (c) => (raw += c));
      req.on('end', async () => {
        const n = ++this.n;
        if (req.headers.authorization !== `Basic ${Buffer.from('mi-user:mi-pass').toString('base64')}`) return res.writeHead(401).end('unauthorized');
        const body = JSON.parse(raw) as Record<string, unknown>;
        const shapeOk =
          ['track', 'identify'].includes(body.type as string) && typeof body.timestamp === 'number' && (body.user_id !== undefined || body.anonymous_id !== undefined) && (body.type !== 'track' || typeof body.event === 'string');
        if (!shapeOk) return res.writeHead(400).end('bad payload');
        const f = this.fault?.(body, n);
        if (this.latencyMs) await new Promise((r) => setTimeout(r, this.latencyMs));
        if (f?.delayMs) await new Promise((r) => setTimeout(r, f.delayMs));
        if (f) return res.writeHead(f.status, f.headers).end(`fault ${f.status}`);
        this.received.push(body);
        res.writeHead(202).end('{"status":"ok"}');
      });
    });
    await new Promise<void>((r) => this.server!.listen(0, '127.0.0.1', r));
    return `http://127.0.0.1:${(this.server!.address() as { port: number }).port}/behavioral/test-key`;
  }
  reset() {
    this.received.length = 0;
    this.fault = undefined;
    this.n = 0;
    this.latencyMs = 0;
  }
  stop() {
    this.server?.closeAllConnections();
    return new Promise((r) => this.server!.close(r));
  }
}


/** Time that passes only when someone sleeps: retries and Retry-After waits cost nothing. */
function fakeTime() {
  let now = Date.UTC(2026, 8, 21);
  const waits: number[] = [];
  return {
    waits,
    clock: () => now,
    sleep: async (ms: number) => {
      waits.push(ms);
      now += Math.max(0, ms);
    },
  };
}

let endpoint: string;
const config = parseForwardConfig({
  since: '2026-01-01T00:00:00Z',
  events: [
    { event_type: 'users.behaviors.CustomEvent', name: 'Product Viewed', properties: ['sku', 'category', 'price'] },
    { event_type: 'users.behaviors.CustomEvent', name: 'Account Created', identify: true },
    { event_type: 'users.behaviors.CustomEvent', name: 'Wishlist Added', event: 'wishlist', properties: 'all' },
    { event_type: 'users.behaviors.Purchase', properties: ['product_id', 'price', 'currency', 'quantity'] },
  ],
  concurrency: 4,
});

/** A client on fake time with the real retry policy (30 s backoff, 5 attempts), jitter fixed at its maximum. */
const client = (o: Partial<ConstructorParameters<typeof MovableInkClient>[0]> = {}, time = fakeTime()) =>
  new MovableInkClient({
    endpoint,
    auth: 'mi-user:mi-pass',
    rateLimiter: new RateLimiter({ limit: 1000, windowMs: 1000, clock: time.clock, sleep: time.sleep }),
    timeoutMs: 2000,
    clock: time.clock,
    sleep: time.sleep,
    random: () => 1,
    ...o,
  });
const run = (c: MovableInkClient = client()) => forwardEvents(t.db, silentLogger, { config, stateSchema: 'braze_bridge', client: c, dryRun: false });
const dryRun = () => forwardEvents(t.db, silentLogger, { config, stateSchema: 'braze_bridge', dryRun: true });
const handled = async () => (await t.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM braze_bridge.forward_events`)).rows[0]!.n;
const tempFile = (name: string) => join(mkdtempSync(join(tmpdir(), 'bb-mi-')), name);
const cliEnv = () => ({ DATABASE_URL: t.url, MOVABLE_INK_ENDPOINT: endpoint, MOVABLE_INK_AUTH: 'mi-user:mi-pass' });

// The Currents events every test reads (and none changes): 7 events of 3 users, loaded once.
beforeAll(async () => {
  t = await createTestDatabase();
  collector = new Collector();
  endpoint = await collector.start();
  const dir = mkdtempSync(join(tmpdir(), 'bb-forward-'));
  const put = async (key: string, bytes: Buffer) => writeObject(dir, key, bytes);
  const ce = (id: string, user: string, ext: string | null, dt: number, name: string, properties: object) => ({ id, user_id: user, external_user_id: ext, time: T0 + dt, name, properties: JSON.stringify(properties) });
  await put(
    currentsKey('users.behaviors.CustomEvent', '2026-09-21-00', 'a'),
    await encodeAvro(customEvent, [
      ce('c1', 'u1', null, 10, 'Product Viewed', { sku: 'A-1', category: 'shoes', price: 59.9, email: 'ada@example.com' }),
      ce('c2', 'u1', 'ext-1', 20, 'Account Created', { plan: 'free' }),
      ce('c3', 'u1', null, 30, 'Product Viewed', { sku: 'B-2', category: 'bags' }),
      ce('c4', 'u2', 'ext-2', 5, 'Product Viewed', { sku: 'C-3' }),
      ce('c5', 'u2', 'ext-2', 6, 'Newsletter Opened', { issue: 7 }),
      ce('c6', 'u3', null, 7, 'Wishlist Added', { sku: 'D-4', phone: '+491701234567', customer_email: 'x@example.com' }),
    ]),
  );
  await put(
    currentsKey('users.behaviors.Purchase', '2026-09-21-00', 'a'),
    await encodeAvro(purchase, [{ id: 'p1', user_id: 'u2', time: T0 + 8, product_id: 'sku-9', price: 19.5, currency: 'EUR', properties: '{"quantity": 2}' }]),
  );
  const summary = await ingest(t.db, silentLogger, { source: openSource(`file://${dir}`), stateSchema: 'braze_bridge', targetSchema: 'braze_currents', concurrency: 2 });
  expect(summary.rows).toBe(7);
});
afterAll(async () => {
  await collector?.stop();
  await t?.drop();
});
// Every test starts with nothing forwarded yet, whatever ran before it.
beforeEach(async () => {
  collector.reset();
  await t.db.query(`TRUNCATE braze_bridge.forward_events, braze_bridge.forward_identities`);
  await t.db.query(`DELETE FROM braze_bridge.runs WHERE job = 'forward'`);
});

describe('the forward config and payloads', () => {
  it('names events in snake_case by default', () => {
    expect(snakeCase('Product Viewed')).toBe('product_viewed');
    expect(snakeCase('Purchase')).toBe('purchase');
    expect(() => parseForwardConfig({ events: [{ event_type: 'users.behaviors.CustomEvent' }] })).toThrow(/custom events need the Braze event "name"/);
  });

  it('identifies anonymous users by the MD5 of an email property when asked, and lists every config problem', () => {
    const md5 = parseForwardConfig({ anonymous_id: { email_md5_of: 'customer_email' }, events: [{ event_type: 'users.behaviors.CustomEvent', name: 'X', properties: ['sku'] }] });
    const payload = buildPayload(md5, md5.rules[0]!, { user_id: 'u9', time_ms: '1000', timezone: null, props: { sku: 'A' }, email: ' Ada@Example.com ' }, null);
    expect(payload).toEqual({ type: 'track', event: 'x', anonymous_id: createHash('md5').update('ada@example.com').digest('hex'), timestamp: 1000, properties: { sku: 'A' } });
    expect(() => parseForwardConfig({ colour: 1, events: [{ event_type: 'bad type!' }], concurrency: 0 })).toThrow(/3 configuration problems.*unknown key "colour".*event_type must be.*concurrency must be/);
  });

  it('buildPayload: track as the known user or anonymously, identify with both ids, properties all without personal data', () => {
    const [viewed, created, wishlist] = config.rules;
    const ev = { user_id: 'u1', time_ms: '1790000010000', timezone: 'Europe/Berlin', props: { sku: 'A-1' }, email: null };
    expect(buildPayload(config, viewed!, ev, null)).toEqual({
      type: 'track', event: 'product_viewed', anonymous_id: 'u1', timestamp: 1_790_000_010_000, timezone: 'Europe/Berlin', properties: { sku: 'A-1' },
    });
    // Once known, the external id replaces the anonymous one.
    expect(buildPayload(config, viewed!, ev, 'ext-1')).toMatchObject({ type: 'track', user_id: 'ext-1' });
    expect(buildPayload(config, viewed!, ev, 'ext-1')).not.toHaveProperty('anonymous_id');
    // identify links both, has no event name, and no properties when there are none.
    expect(buildPayload(config, created!, { ...ev, timezone: null, props: {} }, 'ext-1')).toEqual({ type: 'identify', user_id: 'ext-1', anonymous_id: 'u1', timestamp: 1_790_000_010_000 });
    // A track always carries properties, empty if need be.
    expect(buildPayload(config, viewed!, { ...ev, props: null }, null)).toMatchObject({ properties: {} });
    expect(buildPayload(config, wishlist!, { ...ev, props: { sku: 'D-4', phone: '+49', customer_email: 'x@example.com', DOB: '1990' } }, null)).toMatchObject({ event: 'wishlist', properties: { sku: 'D-4' } });
  });

  it('the notification of a run: every stopped run notifies; a partial one by its share of rejected events', () => {
    const summary = (status: ForwardSummary['status'], sent: number, rejected: number, error?: string): ForwardSummary => ({
      destination: 'movable-ink', status, exitCode: 0, events: { pending: sent + rejected, sent, rejected, leftPending: 0, gaveUp: 0, requeued: 0 }, perEvent: {}, requests: 0, retries: 0, rateLimited: 0, skippedRules: [], durationMs: 0, error,
    });
    expect(forwardOutcome(summary('partial', 3, 1))).toMatchObject({ job: 'forward', bad: false, failedRatio: 0.25, text: 'braze-bridge forward movable-ink: partial, 3 sent, 1 rejected, 0 left pending' });
    expect(forwardOutcome(summary('aborted', 0, 0, 'Movable Ink answered 401'))).toMatchObject({ bad: true, failedRatio: 0, text: expect.stringContaining('aborted: Movable Ink answered 401') });
    expect(forwardOutcome(summary('interrupted', 1, 0)).bad).toBe(true);
  });
});

describe('forwarding to Movable Ink', () => {
  it('a dry run builds the payloads and changes nothing', async () => {
    const summary = await dryRun();
    expect(summary).toMatchObject({ status: 'planned', exitCode: 0, events: { pending: 6, leftPending: 6 } });
    expect(collector.received).toHaveLength(0);
    expect(await handled()).toBe(0);
    expect((await t.db.query(`SELECT 1 FROM braze_bridge.runs WHERE job = 'forward'`)).rows).toHaveLength(0);
  });

  it('sends each event once, in time order per user, with stitched identities and only the named properties', async () => {
    const summary = await run();
    expect(summary).toMatchObject({ status: 'succeeded', exitCode: 0, events: { pending: 6, sent: 6, rejected: 0, leftPending: 0 } });
    const byUser = (id: string) => collector.received.filter((b) => b.user_id === id || b.anonymous_id === id);
    expect(byUser('u1').concat(byUser('ext-1')).map((b) => b.timestamp)).toEqual(expect.arrayContaining([(T0 + 10) * 1000, (T0 + 20) * 1000, (T0 + 30) * 1000]));
    const u1 = collector.received.filter((b) => b.anonymous_id === 'u1' || b.user_id === 'ext-1');
    expect(u1).toEqual([
      { type: 'track', event: 'product_viewed', anonymous_id: 'u1', timestamp: (T0 + 10) * 1000, properties: { sku: 'A-1', category: 'shoes', price: 59.9 } },
      { type: 'identify', user_id: 'ext-1', anonymous_id: 'u1', timestamp: (T0 + 20) * 1000 },
      // No external id on the event itself: the identity learned before is carried.
      { type: 'track', event: 'product_viewed', user_id: 'ext-1', timestamp: (T0 + 30) * 1000, properties: { sku: 'B-2', category: 'bags' } },
    ]);
    const u2 = collector.received.filter((b) => b.user_id === 'ext-2');
    expect(u2).toEqual([
      { type: 'track', event: 'product_viewed', user_id: 'ext-2', timestamp: (T0 + 5) * 1000, properties: { sku: 'C-3' } },
      { type: 'track', event: 'purchase', user_id: 'ext-2', timestamp: (T0 + 8) * 1000, properties: { product_id: 'sku-9', price: 19.5, currency: 'EUR', quantity: 2 } },
    ]);
    // "all" never passes personal data it was not told about.
    expect(collector.received.find((b) => b.event === 'wishlist')).toMatchObject({ anonymous_id: 'u3', properties: { sku: 'D-4' } });
    expect(JSON.stringify(collector.received)).not.toMatch(/ada@example\.com|\+49170|x@example\.com/);
    expect(await handled()).toBe(6);
    const identities = await t.db.query(`SELECT braze_user_id, external_user_id FROM braze_bridge.forward_identities ORDER BY 1`);
    expect(identities.rows).toEqual([
      { braze_user_id: 'u1', external_user_id: 'ext-1' },
      { braze_user_id: 'u2', external_user_id: 'ext-2' },
    ]);
    const runs = await t.db.query(`SELECT status, counts->'events' AS events FROM braze_bridge.runs WHERE job = 'forward'`);
    expect(runs.rows).toEqual([{ status: 'succeeded', events: { pending: 6, sent: 6, rejected: 0, leftPending: 0, gaveUp: 0, requeued: 0 } }]);

    const again = await run();
    expect(again.events).toEqual({ pending: 0, sent: 0, rejected: 0, leftPending: 0, gaveUp: 0, requeued: 0 });
  });

  it('retries 429 honouring Retry-After exactly and 5xx with backoff, records a 400 as rejected and never retries it', async () => {
    collector.fault = (body, n) => {
      if (n === 1) return { status: 429, headers: { 'retry-after': '60' } };
      if (n === 2) return { status: 503 };
      if (body.event === 'purchase') return { status: 400 };
      return undefined;
    };
    const time = fakeTime();
    const summary = await run(client({}, time));
    expect(summary).toMatchObject({ status: 'partial', exitCode: 1, events: { sent: 5, rejected: 1, leftPending: 0 }, rateLimited: 1, retries: 2 });
    // A minute for the 429 as asked, 30 s (the first backoff step) for the 503: on fake time.
    expect(time.waits).toContain(60_000);
    expect(time.waits).toContain(30_000);
    const rejected = await t.db.query(`SELECT event_table, event_id, http_status, response FROM braze_bridge.forward_events WHERE status = 'rejected'`);
    expect(rejected.rows).toEqual([{ event_table: 'users_behaviors_purchase', event_id: 'p1', http_status: 400, response: 'fault 400' }]);
    const listed = await cli(['failures', '--destination', 'movable-ink', '--json'], { DATABASE_URL: t.url });
    expect(JSON.parse(listed.stdout)).toEqual([expect.objectContaining({ table: 'users_behaviors_purchase', id: 'p1', status: 400, response: 'fault 400' })]);
    collector.reset();
    expect((await run()).events.pending).toBe(0); // never sent again
  });

  it('aborts on 401 with exit 4 and records nothing: every event stays pending', async () => {
    const denied = await run(client({ auth: 'bWktdXNlcjp3cm9uZw==' }));
    expect(denied).toMatchObject({ status: 'aborted', exitCode: 4, error: expect.stringMatching(/Movable Ink answered 401: check MOVABLE_INK_AUTH/) });
    expect(denied.events.sent + denied.events.rejected).toBe(0);
    expect(await handled()).toBe(0);
    const runs = await t.db.query(`SELECT status, error FROM braze_bridge.runs WHERE job = 'forward'`);
    expect(runs.rows).toEqual([{ status: 'aborted', error: expect.stringMatching(/answered 401/) }]);
  });

  it('a response slower than the timeout is retried', async () => {
    // Well above a healthy answer even on a busy machine, and the delay well above that.
    collector.fault = (_body, n) => (n === 1 ? { status: 202, delayMs: 2500 } : undefined);
    const summary = await run(client({ timeoutMs: 1000 }));
    expect(summary).toMatchObject({ status: 'succeeded', events: { sent: 6 }, retries: 1 });
  });

  it('an event not accepted after the last attempt is left pending and counted, exit 1, the others go; the next run sends it', async () => {
    collector.fault = (body) => (body.event === 'wishlist' ? { status: 502 } : undefined);
    const summary = await run(client({ maxAttempts: 3 }));
    expect(summary).toMatchObject({ status: 'partial', exitCode: 1, events: { gaveUp: 1 } });
    expect(summary.error).toBeUndefined();
    expect(summary.events.leftPending).toBeGreaterThanOrEqual(1);
    expect(summary.events.sent).toBe(6 - summary.events.leftPending);
    collector.reset();
    const next = await run();
    expect(next.events.sent).toBe(6 - summary.events.sent);
    expect(await handled()).toBe(6);
  });

  it('kill -9 in the middle, then a re-run: no event skipped, at most the in-flight ones sent twice', async () => {
    // Many users so the kill lands in the middle; in a source schema of this test's own.
    await t.db.query(`DROP SCHEMA IF EXISTS bulk_currents CASCADE`);
    await t.db.query(`CREATE SCHEMA bulk_currents`);
    await t.db.query(`CREATE TABLE bulk_currents.users_behaviors_customevent (LIKE braze_currents.users_behaviors_customevent INCLUDING ALL)`);
    await t.db.query(`INSERT INTO bulk_currents.users_behaviors_customevent (id, user_id, external_user_id, "time", name, properties, source_key, occurred_at)
      SELECT 'bulk-' || i, 'bu' || (i % 200), NULL, ${T0} + i, 'Product Viewed', jsonb_build_object('sku', 'S' || i), 'bulk', to_timestamp(${T0} + i) FROM generate_series(1, 1200) i`);
    const file = tempFile('movable-ink.json');
    writeFileSync(file, JSON.stringify({ source_schema: 'bulk_currents', since: '2026-01-01T00:00:00Z', concurrency: 4, rate_limit_per_second: 2000, events: [{ event_type: 'users.behaviors.CustomEvent', name: 'Product Viewed', properties: ['sku'] }] }));
    const env = cliEnv();

    const dry = await cli(['forward', 'movable-ink', '--config', file, '--dry-run', '--out', `${file}.ndjson`, '--json'], env);
    expect(dry.code).toBe(0);
    expect(readFileSync(`${file}.ndjson`, 'utf8').trim().split('\n')).toHaveLength(1200);

    collector.latencyMs = 3;
    const { child, done } = startCli(['forward', 'movable-ink', '--config', file], env);
    while (collector.received.length < 300) await new Promise((r) => setTimeout(r, 5));
    child.kill('SIGKILL');
    await done;
    const rerun = await cli(['forward', 'movable-ink', '--config', file, '--json'], env);
    expect(rerun.code).toBe(0);
    expect(rerun.stderr).not.toContain('mi-pass');
    const counts = new Map<string, number>();
    for (const b of collector.received) {
      const sku = (b.properties as { sku: string }).sku;
      counts.set(sku, (counts.get(sku) ?? 0) + 1);
    }
    expect(counts.size).toBe(1200); // every event arrived
    // Each answer is recorded at once: at most the requests in flight (concurrency 4) were sent twice.
    expect([...counts.values()].filter((n) => n > 1).length).toBeLessThanOrEqual(4);
    expect(Math.max(...counts.values())).toBeLessThanOrEqual(2);
    const runs = await t.db.query(`SELECT status FROM braze_bridge.runs WHERE job = 'forward' ORDER BY id`);
    expect(runs.rows).toEqual([{ status: 'abandoned' }, { status: 'succeeded' }]);
  });

  it('a forward that fails outright still notifies --notify-url and writes --metrics-file, through the CLI', async () => {
    // A source table whose `name` is a number: the pending-events query itself fails.
    await t.db.query(`DROP SCHEMA IF EXISTS broken_currents CASCADE`);
    await t.db.query(`CREATE SCHEMA broken_currents`);
    await t.db.query(`CREATE TABLE broken_currents.users_behaviors_customevent (id text, user_id text, name int, "time" bigint, occurred_at timestamptz)`);
    const file = tempFile('movable-ink.json');
    writeFileSync(file, JSON.stringify({ source_schema: 'broken_currents', events: [{ event_type: 'users.behaviors.CustomEvent', name: 'Product Viewed' }] }));
    const metrics = tempFile('braze-bridge.prom');
    const webhook = await startWebhook();
    try {
      const result = await cli(['forward', 'movable-ink', '--config', file, '--notify-url', webhook.url, '--metrics-file', metrics], cliEnv());
      expect(result.code).toBe(4);
      expect(result.stderr).toMatch(/braze-bridge: operator does not exist: integer = text/);
      expect(webhook.posts).toEqual([
        { job: 'forward', text: expect.stringMatching(/^braze-bridge forward failed: operator does not exist/), summary: { status: 'aborted', error: expect.any(String) } },
      ]);
      expect(existsSync(metrics)).toBe(true);
      expect(readFileSync(metrics, 'utf8')).toContain('braze_bridge_runs_total{job="forward",audience="movable-ink",outcome="aborted"} 1');
      expect(collector.received).toHaveLength(0);
    } finally {
      await webhook.stop();
    }
  });

  it('a forward refused with 401 notifies with its summary and exits 4, through the CLI', async () => {
    const file = tempFile('movable-ink.json');
    writeFileSync(file, JSON.stringify({ events: [{ event_type: 'users.behaviors.Purchase' }] }));
    const webhook = await startWebhook();
    try {
      const result = await cli(['forward', 'movable-ink', '--config', file, '--notify-url', webhook.url, '--json'], { ...cliEnv(), MOVABLE_INK_AUTH: 'mi-user:wrong' });
      expect(result.code).toBe(4);
      expect(JSON.parse(result.stdout)).toMatchObject({ status: 'aborted', exitCode: 4, events: { pending: 1, sent: 0, leftPending: 1 } });
      expect(webhook.posts).toEqual([
        expect.objectContaining({ job: 'forward', text: expect.stringMatching(/^braze-bridge forward movable-ink: aborted: Movable Ink answered 401.*0 sent, 0 rejected, 1 left pending$/) }),
      ]);
      expect(result.stderr).not.toContain('wrong');
    } finally {
      await webhook.stop();
    }
  });
});
