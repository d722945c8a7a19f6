/**
 * Relays Currents events already loaded into PostgreSQL to Movable Ink: the orchestrator of a
 * forward run. Events of one user go out one at a time in event-time order (users in
 * parallel); once a user is known by an external id, every later event of theirs carries it.
 * An event counts as handled only when Movable Ink accepted it or rejected it for good, and is
 * recorded right after, so a crash or a re-run never skips an event and re-sends at most the
 * ones in flight.
 *
 * The pieces: pending-events-sql.ts finds the events, build-payload.ts shapes each one,
 * movable-ink-client.ts sends it, forward-store.ts records it.
 */
import type { Writable } from 'node:stream';
import { AbortError, exitCodeFor, messageOf, outcomeOfError, type ExitCode, type Outcome } from '../errors.js';
import type { Database } from '../db/pool.js';
import { realClock, type Clock } from '../http/clock.js';
import type { Logger } from '../log.js';
import { createDispatcher } from '../run/dispatcher.js';
import { sweepAbandonedRuns, withRunLock } from '../run/run-lock.js';
import { finishRun, startRun } from '../run/run-store.js';
import { buildPayload } from './build-payload.js';
import type { ForwardConfig } from './config.js';
import { learnIdentity, recordHandled, type HandledEvent } from './forward-store.js';
import type { MovableInkClient } from './movable-ink-client.js';
import { pendingEventsSql, type PendingEvent, type PendingEventsSql } from './pending-events-sql.js';

export interface ForwardOptions {
  config: ForwardConfig;
  stateSchema: string;
  /** Absent with dryRun. */
  client?: MovableInkClient;
  dryRun: boolean;
  /** With dryRun: the exact payloads, one JSON object per line. */
  out?: Writable;
  stop?: AbortSignal;
  /** Recorded with the run. */
  args?: object;
  /** Times the run; tests replace it. */
  clock?: Clock;
}

/** What a forward run did: printed, returned as --json, kept as the run's counts. */
export interface ForwardSummary {
  runId?: number;
  destination: string;
  status: Outcome;
  /** Always `exitCodeFor(status)`. */
  exitCode: ExitCode;
  events: { pending: number; sent: number; rejected: number; leftPending: number };
  /** Events sent (or, in a dry run, built) per Movable Ink event name. */
  perEvent: Record<string, number>;
  requests: number;
  retries: number;
  rateLimited: number;
  /** Rules whose event table does not exist yet. */
  skippedRules: string[];
  durationMs: number;
  error?: string;
}

/** Events recorded per statement: few enough that a crash re-sends little, many enough to save round trips. */
const RECORD_EVERY = 25;

export async function forwardEvents(db: Database, log: Logger, o: ForwardOptions): Promise<ForwardSummary> {
  const clock = o.clock ?? realClock;
  const started = clock();
  const summary: ForwardSummary = {
    destination: o.config.destination,
    status: o.dryRun ? 'planned' : 'succeeded',
    exitCode: exitCodeFor(o.dryRun ? 'planned' : 'succeeded'),
    events: { pending: 0, sent: 0, rejected: 0, leftPending: 0 },
    perEvent: {},
    requests: 0,
    retries: 0,
    rateLimited: 0,
    skippedRules: [],
    durationMs: 0,
  };
  const pending = await pendingEventsSql(db, o.stateSchema, o.config);
  summary.skippedRules = pending.skipped;
  const relayAndFinish = async () => {
    const runLog = log.child({ run: summary.runId, destination: o.config.destination });
    const abort = await relay(db, o, pending, summary, runLog);
    finishSummary(o, summary, abort, clock() - started);
    if (abort) runLog.error(summary.error!);
    if (summary.runId) await finishRun(db, o.stateSchema, summary.runId, { status: summary.status, counts: summary, error: summary.error });
    runLog.info('finished', { sent: summary.events.sent, rejected: summary.events.rejected, left: summary.events.leftPending });
    // An AbortError is an outcome (retries exhausted, access refused): the summary says it. Anything else is a fault to raise.
    if (abort && !(abort instanceof AbortError)) throw abort;
    return summary;
  };
  // A dry run changes nothing: no run row, no lock.
  if (o.dryRun) return relayAndFinish();
  await sweepAbandonedRuns(db, o.stateSchema, 'forward');
  summary.runId = await startRun(db, o.stateSchema, { job: 'forward', audience: o.config.destination, args: { ...o.args, destination: o.config.destination } });
  return withRunLock(db, o.stateSchema, summary.runId, relayAndFinish);
}

/** Stream the pending events, one task per user; returns what stopped the run, if anything. */
async function relay(db: Database, o: ForwardOptions, pending: PendingEventsSql, summary: ForwardSummary, log: Logger): Promise<unknown> {
  if (pending.rules.length === 0) return undefined;
  const { concurrency } = o.config;
  let abort: unknown;
  try {
    await db.withConnection(async (conn) => {
      // Users in parallel; each user's events one at a time, in order, inside one task. The
      // dispatcher blocks the cursor once enough users are queued, so memory stays bounded.
      const dispatcher = createDispatcher(concurrency, concurrency * 2);
      const stopped = () => Boolean(dispatcher.error || o.stop?.aborted);
      let group: PendingEvent[] = [];
      try {
        for await (const rows of conn.cursor<PendingEvent>(pending.sql, pending.params, 1000)) {
          for (const row of rows) {
            summary.events.pending++;
            if (group.length > 0 && group[0]!.user_id !== row.user_id) {
              if (stopped()) break;
              const events = group;
              await dispatcher.submit(() => forwardUser(db, o, pending, events, summary, log));
              group = [];
            }
            group.push(row);
          }
          if (stopped()) break;
        }
        if (group.length > 0 && !stopped()) await dispatcher.submit(() => forwardUser(db, o, pending, group, summary, log));
      } finally {
        await dispatcher.drain();
        abort ??= dispatcher.error;
      }
    });
  } catch (error) {
    abort ??= error;
  }
  return abort;
}

/** Counts, outcome and exit code once the relay has stopped, however it stopped. */
function finishSummary(o: ForwardOptions, summary: ForwardSummary, abort: unknown, durationMs: number): void {
  if (o.client) Object.assign(summary, { requests: o.client.stats.requests, retries: o.client.stats.retries, rateLimited: o.client.stats.rateLimited });
  const { events } = summary;
  events.leftPending = o.dryRun ? events.pending : events.pending - events.sent - events.rejected;
  let status: Outcome;
  if (abort) status = outcomeOfError(abort);
  else if (o.stop?.aborted) status = 'interrupted';
  else if (o.dryRun) status = 'planned';
  else status = events.rejected > 0 ? 'partial' : 'succeeded';
  summary.status = status;
  summary.exitCode = exitCodeFor(status);
  if (abort) summary.error = messageOf(abort);
  summary.durationMs = durationMs;
}

/** One user's events, in time order, one request at a time. */
async function forwardUser(db: Database, o: ForwardOptions, pending: PendingEventsSql, events: PendingEvent[], summary: ForwardSummary, log: Logger): Promise<void> {
  const { config } = o;
  const user = events[0]!.user_id;
  let known = events[0]!.known_external;
  const knownBefore = known;
  let handled: HandledEvent[] = [];
  const record = async () => {
    if (o.dryRun) return;
    await recordHandled(db, o.stateSchema, config.destination, summary.runId, handled);
    handled = [];
    if (known && known !== knownBefore) await learnIdentity(db, o.stateSchema, config.destination, user, known);
  };
  try {
    for (const ev of events) {
      if (o.stop?.aborted) break;
      if (ev.external_user_id) known = ev.external_user_id;
      const rule = pending.rules[ev.rule]!;
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
      if (handled.length >= RECORD_EVERY) await record();
    }
  } finally {
    // What was answered is recorded even when a later event of this user aborts the run.
    await record();
  }
}
