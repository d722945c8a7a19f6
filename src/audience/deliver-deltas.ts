/**
 * Delivers a planned audience: streams the deltas from pg_temp.bb_delta through a cursor into
 * batches of attribute objects, at most `concurrency` requests in flight and at most that many
 * batches read ahead, so memory stays bounded whatever the audience size. Each member is in
 * exactly one batch, so never in two in-flight requests. After each batch the snapshot advances
 * for the members Braze accepted, and the others are recorded as failures to retry next run.
 */
import type { Writable } from 'node:stream';
import type { Connection, Database } from '../db/pool.js';
import type { Logger } from '../log.js';
import type { TrackClient } from '../braze/track-client.js';
import { InterruptedError } from '../errors.js';
import { createDispatcher } from '../run/dispatcher.js';
import { recordFailures } from '../run/run-store.js';
import type { Audience, IdentifierKind } from '../types.js';
import { deltasToSendSql } from './plan-sql.js';
import { advanceSnapshot, type ConfirmedMember } from './snapshot-store.js';

export interface DeltaRow {
  identifier: IdentifierKind;
  member_key: string;
  kind: 'new' | 'changed' | 'exited' | 'unchanged';
  /** The member's profile is not known to exist (sent under @update_existing_only true). */
  unverified: boolean;
  /** The attributes to send, as JSON text straight from PostgreSQL (never re-serialised). */
  payload: string;
  /** The attribute names in `payload`, separated by U+001F, for the per-attribute counts. */
  keys: string;
  new_attrs: string | null;
  row_hash: string | null;
}

export interface DeliveryContext {
  db: Database;
  schema: string;
  client: TrackClient;
  log: Logger;
  runId: number | null;
  /** The audience's identifier now: an exit under another identifier may reach an entry's profile. */
  identifier: IdentifierKind;
  /** A backfill: confirmed members are marked backfilled, so an interrupted backfill can resume. */
  backfill?: boolean;
  batchSize: number;
  concurrency: number;
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
  /** Exits Braze did not confirm whose key is of another kind than the entries' (an @identifier change). */
  let crossFailures = 0;

  const sendBatch = async (batch: DeltaRow[]) => {
    const { failed } = await client.track(batch.map((r) => attributeJson(audience, r)));
    const confirmed = batch.filter((_, i) => !failed.has(i));
    const failures = [...failed].map(([i, reason]) => ({ memberKey: batch[i]!.member_key, reason }));
    const advanced: ConfirmedMember[] = confirmed.map((r) =>
      r.kind === 'exited'
        ? // A member who left keeps its flag: if it comes back unverified, it gets its full set again.
          { identifier: r.identifier, memberKey: r.member_key, attrs: r.new_attrs, rowHash: null, present: false, unverified: r.unverified, backfilled: false }
        : {
            identifier: r.identifier,
            memberKey: r.member_key,
            attrs: r.new_attrs,
            rowHash: r.row_hash,
            present: true,
            unverified: audience.updateExistingOnly === true,
            backfilled: ctx.backfill === true,
          },
    );
    if (failures.length === 0 && advanced.every((m) => m.attrs !== null)) {
      // The common case is one statement: autocommit saves two round trips per batch.
      await advanceSnapshot(ctx.db, ctx.schema, audience.name, ctx.runId, advanced);
    } else {
      // Snapshot and failures in one transaction: both say what Braze just answered.
      await ctx.db.withTransaction(async (tx) => {
        await advanceSnapshot(tx, ctx.schema, audience.name, ctx.runId, advanced);
        if (ctx.runId) await recordFailures(tx, ctx.schema, ctx.runId, audience.name, failures);
      });
    }
    delivery.failed += failures.length;
    crossFailures += [...failed.keys()].filter((i) => batch[i]!.kind === 'exited' && batch[i]!.identifier !== ctx.identifier).length;
    for (const r of confirmed) {
      for (const k of r.keys.split('\x1f')) {
        delivery.perAttribute[k] = (delivery.perAttribute[k] ?? 0) + 1;
        delivery.updates++;
      }
    }
    if (failures.length > 0) ctx.log.warn('Braze rejected members of a batch', { rejected: failures.length, reason: failures[0]!.reason });
    done += batch.length;
    ctx.onProgress?.({ audience: audience.name, done, total });
  };

  const phase = async (which: 'exits' | 'entries'): Promise<unknown> => {
    const dispatcher = createDispatcher(ctx.concurrency);
    try {
      for await (const batch of batches(conn, ctx.batchSize, which)) {
        if (dispatcher.error || ctx.stop?.aborted) break;
        // A batch queued behind one that failed the run is not sent.
        await dispatcher.submit(async () => (dispatcher.error ? undefined : sendBatch(batch)));
      }
    } finally {
      await dispatcher.drain();
    }
    // A retry wait or rate-limit pause ended by a signal is a stop, not a failure of the run.
    return dispatcher.error instanceof InterruptedError ? undefined : dispatcher.error;
  };

  // Exits first, all confirmed before any entry or change goes out: when two member keys reach
  // one profile (an @identifier change), the unset of the old key must not land after the set
  // of the new one. An exit under another identifier that Braze did not confirm holds the
  // entries back until the next run; one under the audience's own identifier cannot reach an
  // entry's profile (a different key of the same kind), so it holds nothing back.
  delivery.abort = await phase('exits');
  if (!delivery.abort && !ctx.stop?.aborted) {
    if (crossFailures > 0) {
      delivery.heldBack = true;
      ctx.log.warn('some exits were not confirmed: entries and changes wait for the next run, so they cannot land before an exit of the same profile');
    } else {
      delivery.abort = await phase('entries');
    }
  }
  delivery.requests = client.stats.requests - before.requests;
  delivery.retries = client.stats.retries - before.retries;
  delivery.rateLimited = client.stats.rateLimited - before.rateLimited;
  delivery.stopped = Boolean(ctx.stop?.aborted);
  return delivery;
}

/** `plan --out`: the exact request bodies a sync would send, one JSON object per line. */
export async function writeBodies(conn: Connection, audience: Audience, batchSize: number, out: Writable): Promise<void> {
  for (const which of ['exits', 'entries'] as const) {
    for await (const batch of batches(conn, batchSize, which)) {
      const line = `{"attributes":[${batch.map((r) => attributeJson(audience, r)).join(',')}]}\n`;
      if (!out.write(line)) await new Promise((resolve) => out.once('drain', resolve));
    }
  }
}

/**
 * The attribute object for one member, as JSON text: identifier, the update-existing flag,
 * then the payload exactly as PostgreSQL wrote it. Parsing and re-serialising it in
 * JavaScript would cost more than the request itself and could alter numbers.
 */
export function attributeJson(audience: Audience, row: Pick<DeltaRow, 'identifier' | 'member_key' | 'payload'>): string {
  let identity: string;
  if (row.identifier === 'user_alias') {
    const [alias_name, alias_label] = JSON.parse(row.member_key) as [string, string];
    identity = `"user_alias":${JSON.stringify({ alias_name, alias_label })}`;
  } else {
    identity = `${JSON.stringify(row.identifier)}:${JSON.stringify(row.member_key)}`;
  }
  // payload is a non-empty JSON object: '{"a": 1, ...}'.
  return `{${identity},"_update_existing_only":${audience.updateExistingOnly === true},${row.payload.slice(1)}`;
}

async function* batches(conn: Connection, size: number, which: 'exits' | 'entries'): AsyncGenerator<DeltaRow[]> {
  let batch: DeltaRow[] = [];
  for await (const rows of conn.cursor<DeltaRow>(deltasToSendSql(which), [], Math.max(size, 500))) {
    for (const row of rows) {
      batch.push(row);
      if (batch.length === size) {
        yield batch;
        batch = [];
      }
    }
  }
  if (batch.length > 0) yield batch;
}
