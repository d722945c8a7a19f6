/**
 * Relays Currents events already loaded into PostgreSQL to Movable Ink. Events of one user go
 * out one at a time in event-time order (users in parallel); once a user is known by an
 * external id, every later event of theirs carries it. An event counts as handled only when
 * Movable Ink accepted it or rejected it for good, and is recorded right after, so a crash or
 * a re-run never skips an event and re-sends at most the ones in flight.
 */
import { createHash } from 'node:crypto';
import type { Writable } from 'node:stream';
import { AbortError, ExitCode, messageOf } from '../errors.js';
import { escapeIdentifier, type Database } from '../db/pool.js';
import { createDispatcher } from '../run/dispatcher.js';
import { finishRun, startRun } from '../run/run-store.js';
import { sweepAbandonedRuns, withRunLock } from '../run/run-lock.js';
import type { Logger } from '../log.js';
import { PII, type ForwardConfig, type ForwardRule } from './config.js';
import type { MovableInkClient } from './movable-ink-client.js';

export interface ForwardOptions {
  config: ForwardConfig;
  stateSchema: string;
  /** Absent with dryRun. */
  client?: MovableInkClient;
  dryRun: boolean;
  /** With dryRun: the exact payloads, one JSON object per line. */
  out?: Writable;
  stop?: AbortSignal;
  args?: object;
}

export interface ForwardSummary {
  runId?: number;
  destination: string;
  status: 'succeeded' | 'partial' | 'aborted' | 'interrupted' | 'planned';
  exitCode: ExitCode;
  events: { pending: number; sent: number; rejected: number; leftPending: number };
  perEvent: Record<string, number>;
  requests: number;
  retries: number;
  rateLimited: number;
  skippedRules: string[];
  durationMs: number;
  error?: string;
}

interface Row {
  event_table: string;
  id: string;
  user_id: string;
  external_user_id: string | null;
  known_external: string | null;
  time_ms: string;
  timezone: string | null;
  rule: number;
  props: Record<string, unknown> | null;
  email: string | null;
}

interface Handled {
  table: string;
  id: string;
  status: 'sent' | 'rejected';
  http: number;
  response: string | null;
}

export async function forwardEvents(db: Database, log: Logger, o: ForwardOptions): Promise<ForwardSummary> {
  const started = Date.now();
  const { config } = o;
  const summary: ForwardSummary = {
    destination: config.destination,
    status: o.dryRun ? 'planned' : 'succeeded',
    exitCode: ExitCode.ok,
    events: { pending: 0, sent: 0, rejected: 0, leftPending: 0 },
    perEvent: {},
    requests: 0,
    retries: 0,
    rateLimited: 0,
    skippedRules: [],
    durationMs: 0,
  };
  const { sql, params, rules } = await pendingQuery(db, o.stateSchema, config, summary);
  if (o.dryRun) return relay(db, log, o, summary, sql, params, rules, started);
  await sweepAbandonedRuns(db, o.stateSchema, 'forward');
  summary.runId = await startRun(db, o.stateSchema, { job: 'forward', audience: config.destination, args: { ...o.args, destination: config.destination } });
  return withRunLock(db, o.stateSchema, summary.runId, () => relay(db, log, o, summary, sql, params, rules, started));
}

async function relay(db: Database, log: Logger, o: ForwardOptions, summary: ForwardSummary, sql: string, params: unknown[], rules: ForwardRule[], started: number): Promise<ForwardSummary> {
  const { config } = o;
  const runLog = log.child({ run: summary.runId, destination: config.destination });
  let abort: unknown;
  try {
    if (rules.length > 0) {
      await db.withConnection(async (conn) => {
        // Users in parallel; each user's events one at a time, in order, inside one task.
        const dispatcher = createDispatcher(config.concurrency, config.concurrency * 2);
        const stopped = () => Boolean(dispatcher.error || o.stop?.aborted);
        let group: Row[] = [];
        try {
          for await (const rows of conn.cursor<Row>(sql, params, 1000)) {
            for (const row of rows) {
              summary.events.pending++;
              if (group.length > 0 && group[0]!.user_id !== row.user_id) {
                if (stopped()) break;
                const events = group;
                await dispatcher.submit(() => forwardUser(db, o, rules, events, summary, runLog));
                group = [];
              }
              group.push(row);
            }
            if (stopped()) break;
          }
          if (group.length > 0 && !stopped()) await dispatcher.submit(() => forwardUser(db, o, rules, group, summary, runLog));
        } finally {
          await dispatcher.drain();
          abort ??= dispatcher.error;
        }
      });
    }
  } catch (error) {
    abort ??= error;
  }
  if (o.client) Object.assign(summary, { requests: o.client.stats.requests, retries: o.client.stats.retries, rateLimited: o.client.stats.rateLimited });
  summary.events.leftPending = summary.events.pending - summary.events.sent - summary.events.rejected;
  if (o.dryRun) summary.events.leftPending = summary.events.pending;
  if (abort) {
    summary.status = 'aborted';
    summary.exitCode = ExitCode.aborted;
    summary.error = messageOf(abort);
    runLog.error(summary.error);
  } else if (o.stop?.aborted) {
    summary.status = 'interrupted';
    summary.exitCode = ExitCode.aborted;
  } else if (!o.dryRun && summary.events.rejected > 0) {
    summary.status = 'partial';
    summary.exitCode = ExitCode.partial;
  }
  summary.durationMs = Date.now() - started;
  if (summary.runId) await finishRun(db, o.stateSchema, summary.runId, { status: summary.status === 'planned' ? 'succeeded' : summary.status, counts: summary, error: summary.error });
  runLog.info('finished', { sent: summary.events.sent, rejected: summary.events.rejected, left: summary.events.leftPending });
  if (abort && !(abort instanceof AbortError)) throw abort;
  return summary;
}

/** One user's events, in time order, one request at a time. */
async function forwardUser(db: Database, o: ForwardOptions, rules: ForwardRule[], events: Row[], summary: ForwardSummary, log: Logger): Promise<void> {
  const { config } = o;
  const s = escapeIdentifier(o.stateSchema);
  let known = events[0]!.known_external;
  const knownBefore = known;
  let handled: Handled[] = [];
  const flush = async () => {
    if (o.dryRun) return;
    if (handled.length > 0) {
      await db.query(
        `INSERT INTO ${s}.forward_events (destination, event_table, event_id, status, http_status, response, run_id)
         SELECT $1, t, i, st, h, r, $7 FROM unnest($2::text[], $3::text[], $4::text[], $5::int[], $6::text[]) AS u(t, i, st, h, r)
         ON CONFLICT DO NOTHING`,
        [config.destination, handled.map((h) => h.table), handled.map((h) => h.id), handled.map((h) => h.status), handled.map((h) => h.http), handled.map((h) => h.response), summary.runId ?? null],
      );
      handled = [];
    }
    if (known && known !== knownBefore) {
      await db.query(
        `INSERT INTO ${s}.forward_identities (destination, braze_user_id, external_user_id) VALUES ($1, $2, $3)
         ON CONFLICT (destination, braze_user_id) DO UPDATE SET external_user_id = excluded.external_user_id, learned_at = now()`,
        [config.destination, events[0]!.user_id, known],
      );
    }
  };
  try {
    for (const ev of events) {
      if (o.stop?.aborted) break;
      if (ev.external_user_id) known = ev.external_user_id;
      const rule = rules[ev.rule]!;
      const payload = buildPayload(config, rule, ev, known);
      if (o.dryRun) {
        if (o.out && !o.out.write(`${JSON.stringify(payload)}\n`)) await new Promise((r) => o.out!.once('drain', r));
        summary.perEvent[rule.event] = (summary.perEvent[rule.event] ?? 0) + 1;
        continue;
      }
      const delivery = await o.client!.send(payload);
      if (delivery.ok) {
        summary.events.sent++;
        summary.perEvent[rule.event] = (summary.perEvent[rule.event] ?? 0) + 1;
        handled.push({ table: ev.event_table, id: ev.id, status: 'sent', http: delivery.status, response: null });
      } else {
        summary.events.rejected++;
        handled.push({ table: ev.event_table, id: ev.id, status: 'rejected', http: delivery.status, response: delivery.response });
        log.warn('event rejected by Movable Ink', { event: rule.event, status: delivery.status });
      }
      if (handled.length >= 25) await flush();
    }
  } finally {
    // What was answered is recorded even when a later event of this user aborts the run.
    await flush();
  }
}

/** The Movable Ink body: track or identify, ids, epoch-millisecond timestamp, time zone. */
export function buildPayload(config: ForwardConfig, rule: ForwardRule, ev: Pick<Row, 'user_id' | 'time_ms' | 'timezone' | 'props' | 'email'>, known: string | null): Record<string, unknown> {
  const anonymous =
    config.anonymousId.kind === 'email_md5' && ev.email ? createHash('md5').update(ev.email.trim().toLowerCase()).digest('hex') : ev.user_id;
  const properties = rule.properties === 'all' ? Object.fromEntries(Object.entries(ev.props ?? {}).filter(([k]) => !PII.test(k))) : (ev.props ?? {});
  const ids = rule.identify ? { ...(known ? { user_id: known } : {}), anonymous_id: anonymous } : known ? { user_id: known } : { anonymous_id: anonymous };
  return {
    type: rule.identify ? 'identify' : 'track',
    ...(rule.identify ? {} : { event: rule.event }),
    ...ids,
    timestamp: Number(ev.time_ms),
    ...(ev.timezone ? { timezone: ev.timezone } : {}),
    ...(Object.keys(properties).length > 0 || !rule.identify ? { properties } : {}),
  };
}

/** One UNION ALL over the event tables the rules name, of the events not yet handled, by user and time. */
async function pendingQuery(db: Database, stateSchema: string, config: ForwardConfig, summary: ForwardSummary) {
  const parts: string[] = [];
  const rules: ForwardRule[] = [];
  const columnsOf = new Map<string, Set<string>>();
  for (const rule of config.rules) {
    const qualified = `${escapeIdentifier(config.sourceSchema)}.${escapeIdentifier(rule.table)}`;
    if (!columnsOf.has(rule.table)) {
      const { rows } = await db.query<{ name: string }>(
        `SELECT attname::text AS name FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped`,
        [qualified],
      );
      columnsOf.set(rule.table, new Set(rows.map((r) => r.name)));
    }
    const cols = columnsOf.get(rule.table)!;
    if (!cols.has('id') || !cols.has('user_id')) {
      summary.skippedRules.push(`${rule.eventType}${rule.name ? ` "${rule.name}"` : ''}: no table ${config.sourceSchema}.${rule.table} yet`);
      continue;
    }
    const index = rules.push(rule) - 1;
    const col = (c: string, type = 'text') => (cols.has(c) ? `e.${escapeIdentifier(c)}` : `NULL::${type}`);
    const hasProps = cols.has('properties');
    const lit = (v: string) => `'${v.replace(/'/g, "''")}'`;
    // A listed property comes from the event's properties JSON, else from a column of that name.
    const property = (p: string) => {
      const sources = [
        hasProps ? `CASE WHEN jsonb_typeof(e.properties) = 'object' THEN e.properties -> ${lit(p)} END` : null,
        cols.has(p) && p !== 'properties' ? `to_jsonb(e.${escapeIdentifier(p)})` : null,
      ].filter(Boolean);
      return sources.length > 0 ? `coalesce(${sources.join(', ')})` : 'NULL::jsonb';
    };
    const props =
      rule.properties === 'all'
        ? hasProps ? `CASE WHEN jsonb_typeof(e.properties) = 'object' THEN e.properties END` : 'NULL::jsonb'
        : rule.properties.length === 0
          ? `'{}'::jsonb`
          : `jsonb_strip_nulls(jsonb_build_object(${rule.properties.map((p) => `${lit(p)}, ${property(p)}`).join(', ')}))`;
    const email = config.anonymousId.kind === 'email_md5'
      ? `coalesce(${[hasProps ? `CASE WHEN jsonb_typeof(e.properties) = 'object' THEN e.properties ->> ${lit(config.anonymousId.property)} END` : null, cols.has(config.anonymousId.property) ? `e.${escapeIdentifier(config.anonymousId.property)}::text` : null, 'NULL::text'].filter(Boolean).join(', ')})`
      : 'NULL::text';
    const time = cols.has('time') ? `(e."time" * 1000)::bigint` : `(extract(epoch FROM e.occurred_at) * 1000)::bigint`;
    parts.push(`SELECT ${lit(rule.table)} AS event_table, e.id, e.user_id, ${col('external_user_id')} AS external_user_id, ${time}::text AS time_ms,
              ${col('timezone')} AS timezone, ${index} AS rule, ${props} AS props, ${email} AS email
         FROM ${qualified} AS e
        WHERE ${rule.name ? `${col('name')} = ${lit(rule.name)} AND ` : ''}${config.since ? `e.occurred_at >= $2 AND ` : ''}NOT EXISTS (
              SELECT 1 FROM ${escapeIdentifier(stateSchema)}.forward_events AS f WHERE f.destination = $1 AND f.event_table = ${lit(rule.table)} AND f.event_id = e.id)`);
  }
  const sql = `SELECT u.*, i.external_user_id AS known_external FROM (${parts.join('\nUNION ALL\n') || 'SELECT NULL WHERE false'}) AS u
    LEFT JOIN ${escapeIdentifier(stateSchema)}.forward_identities AS i ON i.destination = $1 AND i.braze_user_id = u.user_id
    ORDER BY u.user_id, u.time_ms::bigint, u.id`;
  return { sql, params: config.since ? [config.destination, config.since] : [config.destination], rules };
}
