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
import pLimit, { type LimitFunction } from 'p-limit';
import { realClock, type Clock } from '../http/clock.js';
import { lock, lockHolder, lockKey, tryLock, unlock } from '../db/locks.js';
import type { Logger } from '../log.js';
import { createDispatcher } from '../run/dispatcher.js';
import { sweepAbandonedRuns, withRunLock } from '../run/run-lock.js';
import { finishRun, startRun } from '../run/run-store.js';
import { buildPayload } from './build-payload.js';
import type { ForwardConfig } from './config.js';
import { learnIdentity, recordHandled, requeueRejected, type HandledEvent } from './forward-store.js';
import type { Delivery, MovableInkClient } from './movable-ink-client.js';
import { pendingEventsSql, type PendingEvent, type PendingEventsSql } from './pending-events-sql.js';
import { deliverEvent } from './deliver-event.js';

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
  /** Events rejected for good before become pending again (after the cause was fixed). */
  retryRejected?: boolean;
  /** Wait for another forward run of the destination to finish instead of ending `locked` (exit 3). */
  waitForLock?: boolean;
}

/** What a forward run did: printed, returned as --json, kept as the run's counts. */
export interface ForwardSummary {
  runId?: number;
  destination: string;
  status: Outcome;
  /** Always `exitCodeFor(status)`. */
  exitCode: ExitCode;
  events: {
    pending: number;
    sent: number;
    rejected: number;
    leftPending: number;
    /** Events not accepted after the last attempt (Braze's webhook rule: 5): left pending for a later run. */
    gaveUp: number;
    /** Rejected events made pending again by --retry-rejected. */
    requeued: number;
  };
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

export async function forwardEvents(db: Database, log: Logger, o: ForwardOptions): Promise<ForwardSummary> {
  const clock = o.clock ?? realClock;
  const started = clock();
  const summary: ForwardSummary = {
    destination: o.config.destination,
    status: o.dryRun ? 'planned' : 'succeeded',
    exitCode: exitCodeFor(o.dryRun ? 'planned' : 'succeeded'),
    events: { pending: 0, sent: 0, rejected: 0, leftPending: 0, gaveUp: 0, requeued: 0 },
    perEvent: {},
    requests: 0,
    retries: 0,
    rateLimited: 0,
    skippedRules: [],
    durationMs: 0,
  };
  let pending: PendingEventsSql;
  const relayAndFinish = async () => {
    if (o.retryRejected && !o.dryRun) summary.events.requeued = await requeueRejected(db, o.stateSchema, o.config.destination);
    pending = await pendingEventsSql(db, o.stateSchema, o.config);
    summary.skippedRules = pending.skipped;
    const runLog = log.child({ run: summary.runId, destination: o.config.destination });
    const abort = await relay(db, o, pending, summary, runLog);
    finishSummary(o, summary, abort, clock() - started);
    if (abort) runLog.error(summary.error!);
    if (summary.runId) await finishRun(db, o.stateSchema, summary.runId, { status: summary.status, counts: summary, error: summary.error });
    runLog.info('finished', { sent: summary.events.sent, rejected: summary.events.rejected, left: summary.events.leftPending, gaveUp: summary.events.gaveUp });
    // An AbortError is an outcome (access refused, a wrong URL): the summary says it. Anything else is a fault to raise.
    if (abort && !(abort instanceof AbortError)) throw abort;
    return summary;
  };
  // A dry run changes nothing: no run row, no lock.
  if (o.dryRun) return relayAndFinish();
  // One forward run per destination at a time: two at once would each send the whole backlog.
  return db.withConnection(async (conn) => {
    const key = lockKey(o.stateSchema, `forward:${o.config.destination}`);
    if (o.waitForLock) await lock(conn, key, FORWARD_LOCK);
    else if (!(await tryLock(conn, key, FORWARD_LOCK))) {
      const holder = await lockHolder(conn, key, FORWARD_LOCK);
      summary.status = 'locked';
      summary.exitCode = exitCodeFor('locked');
      summary.error = `another forward run to ${o.config.destination} is running${holder ? ` (PostgreSQL backend ${holder})` : ''}; nothing sent (use --wait to wait for it)`;
      summary.durationMs = clock() - started;
      log.warn(summary.error);
      return summary;
    }
    try {
      await sweepAbandonedRuns(db, o.stateSchema, 'forward');
      summary.runId = await startRun(db, o.stateSchema, { job: 'forward', audience: o.config.destination, args: { ...o.args, destination: o.config.destination } });
      return await withRunLock(db, o.stateSchema, summary.runId, relayAndFinish);
    } finally {
      await unlock(conn, key, FORWARD_LOCK);
    }
  });
}

const FORWARD_LOCK = 4;

/** Stream the pending events, one task per user; returns what stopped the run, if anything. */
async function relay(db: Database, o: ForwardOptions, pending: PendingEventsSql, summary: ForwardSummary, log: Logger): Promise<unknown> {
  if (pending.rules.length === 0) return undefined;
  const { concurrency } = o.config;
  let abort: unknown;
  try {
    await db.withConnection(async (conn) => {
      // Users in parallel; each user's events one at a time, in order, inside one task. The
      // dispatcher blocks the cursor once enough users are queued, so memory stays bounded.
      // Requests in flight are limited by `slots` (one per request, released while a user waits
      // for a retry); users in progress by the dispatcher, so a waiting user never blocks one slot.
      const slots = pLimit(concurrency);
      const dispatcher = createDispatcher(concurrency * USERS_PER_SLOT, concurrency * USERS_PER_SLOT * 2);
      const stopped = () => Boolean(dispatcher.error || o.stop?.aborted);
      let group: PendingEvent[] = [];
      try {
        for await (const rows of conn.cursor<PendingEvent>(pending.sql, pending.params, 1000)) {
          for (const row of rows) {
            summary.events.pending++;
            if (group.length > 0 && group[0]!.user_id !== row.user_id) {
              if (stopped()) break;
              const events = group;
              await dispatcher.submit(() => forwardUser(db, o, pending, events, summary, log, slots));
              group = [];
            }
            group.push(row);
          }
          if (stopped()) break;
        }
        if (group.length > 0 && !stopped()) await dispatcher.submit(() => forwardUser(db, o, pending, group, summary, log, slots));
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
  else status = events.rejected > 0 || events.gaveUp > 0 ? 'partial' : 'succeeded';
  summary.status = status;
  summary.exitCode = exitCodeFor(status);
  if (abort) summary.error = messageOf(abort);
  summary.durationMs = durationMs;
}

/** Users in progress per request slot: enough that users waiting for a retry leave the slots busy. */
const USERS_PER_SLOT = 8;

/**
 * One user's events, in time order, one request at a time. Each answer is recorded as soon as it
 * comes (a kill -9 re-sends at most the requests in flight). An event still not accepted after
 * the last attempt is left pending with the user's later events, and the run goes on.
 */
async function forwardUser(
  db: Database,
  o: ForwardOptions,
  pending: PendingEventsSql,
  events: PendingEvent[],
  summary: ForwardSummary,
  log: Logger,
  slots: LimitFunction,
): Promise<void> {
  const { config } = o;
  const user = events[0]!.user_id;
  let known = events[0]!.known_external;
  let learned = known;
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
    // Recorded while the request's slot is still held: at any moment at most `concurrency`
    // events are sent but not recorded, which bounds what a kill -9 re-sends.
    const record = async (delivery: Delivery) => {
      let handled: HandledEvent;
      if (delivery.ok) {
        summary.events.sent++;
        summary.perEvent[rule.event] = (summary.perEvent[rule.event] ?? 0) + 1;
        handled = { table: ev.event_table, id: ev.id, status: 'sent', http: delivery.status, response: null };
      } else {
        summary.events.rejected++;
        handled = { table: ev.event_table, id: ev.id, status: 'rejected', http: delivery.status, response: delivery.response };
        log.warn('event rejected by Movable Ink', { event: rule.event, status: delivery.status });
      }
      await recordHandled(db, o.stateSchema, config.destination, summary.runId, [handled]);
      if (known && known !== learned) {
        await learnIdentity(db, o.stateSchema, config.destination, user, known);
        learned = known;
      }
    };
    const delivery = await deliverEvent(o.client!, payload, slots, log, record, o.stop);
    if (delivery === 'stopped') break;
    if (delivery === 'gave-up') {
      summary.events.gaveUp++;
      log.warn('event not accepted after the last attempt; it and the user\'s later events stay pending for the next run', { event: rule.event });
      break;
    }
  }
}
