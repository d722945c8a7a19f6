/**
 * The forwarding bookkeeping (sql/migrations/0003_forward.sql): every statement on
 * `forward_events` (each event a destination has handled: sent, or rejected for good with the
 * answer) and `forward_identities` (the external id a Braze user is known by, per destination).
 * The relay records through here, `failures --destination` and the metrics file read through
 * here. The one exception is the pending-events query, generated per config in
 * pending-events-sql.ts, which anti-joins these tables by the names `forwardTables` gives.
 */
import { escapeIdentifier, type Queryable } from '../db/pool.js';

/** The two tables, schema-qualified and quoted. */
export function forwardTables(schema: string): { events: string; identities: string } {
  const s = escapeIdentifier(schema);
  return { events: `${s}.forward_events`, identities: `${s}.forward_identities` };
}

/** One event the destination answered for good. */
export interface HandledEvent {
  /** The Currents event table, e.g. users_behaviors_purchase. */
  table: string;
  id: string;
  status: 'sent' | 'rejected';
  /** The HTTP status of the answer. */
  http: number;
  /** The answer's body, kept for rejected events only. */
  response: string | null;
}

/**
 * Record handled events, in one statement. An event already recorded stays as it was: a re-run
 * that re-sent an event still in flight when the last run died must not rewrite its history.
 */
export async function recordHandled(db: Queryable, schema: string, destination: string, runId: number | undefined, events: readonly HandledEvent[]): Promise<void> {
  if (events.length === 0) return;
  await db.query(
    `INSERT INTO ${forwardTables(schema).events} (destination, event_table, event_id, status, http_status, response, run_id)
     SELECT $1, t, i, st, h, r, $7 FROM unnest($2::text[], $3::text[], $4::text[], $5::int[], $6::text[]) AS u(t, i, st, h, r)
     ON CONFLICT DO NOTHING`,
    [destination, events.map((e) => e.table), events.map((e) => e.id), events.map((e) => e.status), events.map((e) => e.http), events.map((e) => e.response), runId ?? null],
  );
}

/**
 * --retry-rejected: a destination's events rejected for good become pending again (their rows
 * go), for when the rejection was the configuration's fault. Returns how many.
 */
export async function requeueRejected(db: Queryable, schema: string, destination: string): Promise<number> {
  const { rowCount } = await db.query(`DELETE FROM ${forwardTables(schema).events} WHERE destination = $1 AND status = 'rejected'`, [destination]);
  return rowCount ?? 0;
}

/** Remember the external id a Braze user is known by, so later runs send it with every event of theirs. */
export async function learnIdentity(db: Queryable, schema: string, destination: string, brazeUserId: string, externalUserId: string): Promise<void> {
  await db.query(
    `INSERT INTO ${forwardTables(schema).identities} (destination, braze_user_id, external_user_id) VALUES ($1, $2, $3)
     ON CONFLICT (destination, braze_user_id) DO UPDATE SET external_user_id = excluded.external_user_id, learned_at = now()`,
    [destination, brazeUserId, externalUserId],
  );
}

/** An event the destination rejected for good, as `failures --destination` lists it. */
export interface RejectedEvent {
  table: string;
  id: string;
  /** The HTTP status of the answer. */
  status: number | null;
  response: string | null;
  /** When it was recorded, ISO 8601. */
  at: string;
}

/** Events a destination rejected for good, newest first, with the answer. */
export async function listRejectedEvents(db: Queryable, schema: string, destination: string, limit: number): Promise<RejectedEvent[]> {
  const { rows } = await db.query<{ event_table: string; event_id: string; http_status: number | null; response: string | null; handled_at: Date }>(
    `SELECT event_table, event_id, http_status, response, handled_at FROM ${forwardTables(schema).events}
      WHERE destination = $1 AND status = 'rejected' ORDER BY handled_at DESC, event_id LIMIT $2`,
    [destination, limit],
  );
  return rows.map((r) => ({ table: r.event_table, id: r.event_id, status: r.http_status, response: r.response, at: r.handled_at.toISOString() }));
}

/** Handled events per destination and status, for the metrics file. */
export async function forwardMetrics(db: Queryable, schema: string): Promise<Array<{ destination: string; status: string; events: number }>> {
  const { rows } = await db.query<{ destination: string; status: string; n: string }>(
    `SELECT destination, status, count(*) AS n FROM ${forwardTables(schema).events} GROUP BY 1, 2 ORDER BY 1, 2`,
  );
  return rows.map((r) => ({ destination: r.destination, status: r.status, events: Number(r.n) }));
}
