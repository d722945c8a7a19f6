/**
 * Delivers a planned audience: reads the deltas from pg_temp.bb_delta in chunks, in send order,
 * into batches of attribute objects, at most `concurrency` requests in flight and at most that many
 * batches read ahead, so memory stays bounded whatever the audience size. Each member is in
 * exactly one batch, so never in two in-flight requests. Braze's answers are recorded in groups
 * (record-confirmed.ts): the snapshot advances for the members Braze accepted, and the others are
 * recorded as failures to retry next run.
 */
import type { Writable } from 'node:stream';
import type { Connection } from '../db/pool.js';
import type { Logger } from '../log.js';
import type { TrackClient } from '../braze/track-client.js';
import { InterruptedError } from '../errors.js';
import { createDispatcher } from '../run/dispatcher.js';
import type { Audience, IdentifierKind } from '../types.js';
import { KeyCounter } from './payload-keys.js';
import { attributeObjects, ENTRY_OF_EMAILS_SQL, readBatches, SEQ_INDEX_SQL, type DeltaBatch, type Phase } from './delta-batches.js';
import { createRecorder } from './record-confirmed.js';

/** Members whose answers are recorded together, and how long the oldest may wait (see record-confirmed.ts). */
export const RECORD_GROUP = { maxMembers: 5000, maxDelayMs: 1000 };

export interface DeliveryContext {
  schema: string;
  client: TrackClient;
  log: Logger;
  runId: number | null;
  /** The audience's identifier now: an exit under another identifier may reach an entry's profile. */
  identifier: IdentifierKind;
  /** A backfill: confirmed members are marked backfilled, so an interrupted backfill can resume. */
  backfill?: boolean;
  /** Every delta sent is a new member without a snapshot row (Plan.firstSync): recorded by plain inserts. */
  allNew?: boolean;
  batchSize: number;
  concurrency: number;
  /** The audience's attribute columns in order, as planned: what a new member's `present` marks. */
  columns?: readonly string[];
  /** Aborted on SIGTERM/SIGINT: no new batch starts; in-flight ones finish and are recorded. */
  stop?: AbortSignal;
  /** After each batch: members confirmed or failed so far, of `total`. */
  onProgress?: (p: { audience: string; done: number; total: number }) => void;
}

export interface Delivery {
  /** Data points in batches Braze accepted, in total and per attribute. */
  updates: number;
  perAttribute: Record<string, number>;
  /** Members Braze did not accept. */
  failed: number;
  requests: number;
  retries: number;
  rateLimited: number;
  /** The error that stopped delivery (retries exhausted, 401, …), if any. */
  abort?: unknown;
  /** A signal stopped delivery before every batch was sent. */
  stopped: boolean;
  /** Entries and changes not sent because an exit of this run was not confirmed. */
  heldBack: boolean;
}

export async function deliverDeltas(conn: Connection, ctx: DeliveryContext, audience: Audience, total: number): Promise<Delivery> {
  const { client } = ctx;
  const before = { ...client.stats };
  const delivery: Delivery = { updates: 0, perAttribute: {}, failed: 0, requests: 0, retries: 0, rateLimited: 0, stopped: false, heldBack: false };
  let done = 0;
  const accepted = new KeyCounter(ctx.columns ?? []);
  /** An unconfirmed exit is of another key kind than the entries' (an @identifier change): it may reach any entry's profile. */
  let crossFailure = false;
  /** Unconfirmed exits' emails: Braze matches an email whatever its case, so one may be an entry's profile. */
  const unconfirmedEmails: string[] = [];

  await indexDeltas(conn);
  // The recorder's statements join a group of members to the snapshot by its key: index lookups
  // only, never a plan that reads the whole snapshot for each group (reset when delivery ends).
  await conn.query('SET enable_hashjoin = off');
  await conn.query('SET enable_mergejoin = off');
  try {
    const recorder = createRecorder(conn, {
      schema: ctx.schema,
      audience: audience.name,
      runId: ctx.runId,
      updateExistingOnly: audience.updateExistingOnly === true,
      backfill: ctx.backfill === true,
      allNew: ctx.allNew === true,
      ...RECORD_GROUP,
    });

    const sendBatch = async (batch: DeltaBatch, which: Phase) => {
      const { failed } = await client.track(attributeObjects(audience, batch));
      const confirmed = failed.size === 0 ? batch.seqs : batch.seqs.filter((_, i) => !failed.has(i));
      const failures = [...failed].map(([i, reason]) => ({ memberKey: batch.keys[i]!, reason }));
      delivery.failed += failures.length;
      if (which === 'exits') {
        for (const i of failed.keys()) {
          if (batch.identifiers[i] !== ctx.identifier) crossFailure = true;
          else if (ctx.identifier === 'email') unconfirmedEmails.push(batch.keys[i]!);
        }
      }
      for (let i = 0; i < batch.payloads.length; i++) {
        if (!failed.has(i)) accepted.addMarked(batch.payloads[i]!, batch.marks[i]!);
      }
      if (failures.length > 0) ctx.log.warn('Braze rejected members of a batch', { rejected: failures.length, reason: failures[0]!.reason });
      done += batch.seqs.length;
      ctx.onProgress?.({ audience: audience.name, done, total });
      await recorder.add(confirmed, failures);
    };

    const phase = async (which: Phase): Promise<unknown> => {
      const dispatcher = createDispatcher(ctx.concurrency);
      let recordError: unknown;
      try {
        // Reads share the connection with the recorder: one must never run inside a group's
        // transaction, and reading ahead stops while the database falls behind.
        for await (const batch of readBatches(conn, ctx.batchSize, which, accepted.everyColumn, () => recorder.readable())) {
          if (dispatcher.error || ctx.stop?.aborted) break;
          // A batch queued behind one that failed the run is not sent.
          await dispatcher.submit(async () => (dispatcher.error ? undefined : sendBatch(batch, which)));
        }
      } finally {
        await dispatcher.drain();
        // Every answer of this phase is recorded before the next phase starts or delivery ends.
        // A write that failed stops delivery like any abort: the counts of what Braze accepted stay.
        recordError = await recorder.flush().then(
          () => undefined,
          (e: unknown) => e,
        );
      }
      // A retry wait or rate-limit pause ended by a signal is a stop, not a failure of the run.
      const error = recordError ?? dispatcher.error;
      return error instanceof InterruptedError ? undefined : error;
    };

    // Exits first, all confirmed before any entry or change goes out: when two member keys reach
    // one profile (an @identifier change, or an email whose case changed), the unset of the old
    // key must not land after the set of the new one. An exit that Braze did not confirm and
    // that may reach an entry's profile holds the entries back until the next run: one under
    // another identifier, or an email that an entry repeats in another case. Any other exit under
    // the audience's own identifier reaches another profile, so it holds nothing back.
    delivery.abort = await phase('exits');
    if (!delivery.abort && !ctx.stop?.aborted) {
      const reachesEntry =
        crossFailure || (unconfirmedEmails.length > 0 && (await conn.query<{ hit: boolean }>(ENTRY_OF_EMAILS_SQL, [unconfirmedEmails])).rows[0]!.hit);
      if (reachesEntry) {
        delivery.heldBack = true;
        ctx.log.warn('some exits were not confirmed: entries and changes wait for the next run, so they cannot land before an exit of the same profile');
      } else {
        delivery.abort = await phase('entries');
      }
    }
    delivery.updates = accepted.total;
    delivery.perAttribute = accepted.perKey();
    delivery.requests = client.stats.requests - before.requests;
    delivery.retries = client.stats.retries - before.retries;
    delivery.rateLimited = client.stats.rateLimited - before.rateLimited;
    delivery.stopped = Boolean(ctx.stop?.aborted);
    return delivery;
  } finally {
    await conn.query('RESET enable_hashjoin').catch(() => {});
    await conn.query('RESET enable_mergejoin').catch(() => {});
  }
}

/** `plan --out`: the exact request bodies a sync would send, one JSON object per line. */
export async function writeBodies(conn: Connection, audience: Audience, batchSize: number, out: Writable): Promise<void> {
  await indexDeltas(conn);
  for (const which of ['exits', 'entries'] as const) {
    for await (const batch of readBatches(conn, batchSize, which, '')) {
      const line = `{"attributes":[${attributeObjects(audience, batch).join(',')}]}\n`;
      if (!out.write(line)) await new Promise((resolve) => out.once('drain', resolve));
    }
  }
}

/** Index and analyze bb_delta by send order: what batches are read by and the recorder writes by. */
async function indexDeltas(conn: Connection): Promise<void> {
  for (const sql of SEQ_INDEX_SQL) await conn.query(sql);
}
