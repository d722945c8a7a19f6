/**
 * The snapshot — per audience and member, what Braze confirmed — and the audiences table:
 * every statement that writes or counts them. The snapshot moves only on proof: after Braze
 * accepted a batch, or for members whose change needs no request at all.
 */
import { escapeIdentifier, type Connection, type Queryable } from '../db/pool.js';
import type { Audience, IdentifierKind } from '../types.js';

export interface ConfirmedMember {
  identifier: string;
  memberKey: string;
  /** The member's attributes now held by Braze (jsonb text, as PostgreSQL wrote it), or null when it exited. */
  attrs: string | null;
  /** The hash of the result row the attributes came from. */
  rowHash?: string | null;
}

/**
 * Moves the snapshot forward for members Braze accepted, in one statement per batch. `attrs`
 * is the exact jsonb text the delta query produced (never re-serialised by JavaScript, which
 * would round numerics and cause false changes next run); NULL means the member exited.
 */
export async function advanceSnapshot(db: Queryable, schema: string, audience: string, runId: number | null, members: readonly ConfirmedMember[]): Promise<void> {
  const s = escapeIdentifier(schema);
  const kept = members.filter((m) => m.attrs !== null);
  const gone = members.filter((m) => m.attrs === null);
  if (kept.length > 0) {
    // One jsonb parameter with the attributes spliced in as they came from PostgreSQL: no
    // escaping of large strings in JavaScript, one parse on the server.
    const rows = kept.map((m) => `{"i":${JSON.stringify(m.identifier)},"k":${JSON.stringify(m.memberKey)},"a":${m.attrs},"h":${m.rowHash ?? 'null'}}`);
    await db.query(
      `INSERT INTO ${s}.snapshots AS t (audience, identifier, member_key, attrs, row_hash, confirmed_at, confirmed_run)
       SELECT $1, u.i, u.k, u.a, u.h, now(), $3 FROM jsonb_to_recordset($2::jsonb) AS u(i text, k text, a jsonb, h bigint)
       ON CONFLICT (audience, identifier, member_key)
       DO UPDATE SET attrs = excluded.attrs, row_hash = excluded.row_hash, confirmed_at = excluded.confirmed_at, confirmed_run = excluded.confirmed_run`,
      [audience, `[${rows.join(',')}]`, runId],
    );
  }
  if (gone.length > 0) {
    // Row-value IN over a short unnest: an index lookup per member, never a scan of the table.
    await db.query(
      `DELETE FROM ${s}.snapshots WHERE audience = $1 AND (identifier, member_key) IN (SELECT * FROM unnest($2::text[], $3::text[]))`,
      [audience, gone.map((m) => m.identifier), gone.map((m) => m.memberKey)],
    );
  }
}

/**
 * What needs no request, in one statement from the planned deltas (pg_temp.bb_delta): exits
 * that send nothing (keep, or nothing to unset), members with no attributes, and rows whose
 * hash changed but whose values did not.
 */
export async function applyWithoutSending(conn: Queryable, schema: string, audience: string, runId: number | null): Promise<void> {
  const s = escapeIdentifier(schema);
  await conn.query(
    `WITH gone AS (
       DELETE FROM ${s}.snapshots t USING pg_temp.bb_delta d
        WHERE d.kind = 'exited' AND d.payload IS NULL AND t.audience = $1 AND t.identifier = d.identifier AND t.member_key = d.member_key
     )
     INSERT INTO ${s}.snapshots AS t (audience, identifier, member_key, attrs, row_hash, confirmed_at, confirmed_run)
     SELECT $1, identifier, member_key, new_attrs, row_hash, now(), $2 FROM pg_temp.bb_delta
      WHERE kind IN ('new', 'changed', 'unchanged') AND (payload IS NULL OR payload = '{}'::jsonb)
     ON CONFLICT (audience, identifier, member_key)
     DO UPDATE SET attrs = excluded.attrs, row_hash = excluded.row_hash, confirmed_at = excluded.confirmed_at, confirmed_run = excluded.confirmed_run`,
    [audience, runId],
  );
}

/** How many members the snapshot holds for an audience (the guardrail's base). */
export async function countSnapshotMembers(db: Queryable, snapshots: string, audience: string): Promise<number> {
  const { rows } = await db.query<{ n: string }>(`SELECT count(*) AS n FROM ${snapshots} AS sn WHERE sn.audience = $1`, [audience]);
  return Number(rows[0]!.n);
}

/** The snapshot table to plan against, or an empty stand-in when planning on a database never synced. */
export async function snapshotSource(conn: Connection, schema: string, planning: boolean): Promise<string> {
  const table = `${escapeIdentifier(schema)}.snapshots`;
  if (!planning) return table;
  const { rows } = await conn.query<{ t: string | null }>('SELECT to_regclass($1)::text AS t', [table]);
  return rows[0]!.t ? table : `(SELECT NULL::text AS audience, NULL::text AS identifier, NULL::text AS member_key, NULL::jsonb AS attrs, NULL::bigint AS row_hash WHERE false)`;
}

/** Record the audience's settings as last loaded (the scheduler and status read them). */
export async function recordAudience(db: Queryable, schema: string, audience: Audience, identifier: IdentifierKind): Promise<void> {
  await db.query(
    `INSERT INTO ${escapeIdentifier(schema)}.audiences (name, file, identifier, settings, schedule, updated_at) VALUES ($1, $2, $3, $4, $5, now())
     ON CONFLICT (name) DO UPDATE SET file = excluded.file, identifier = excluded.identifier, settings = excluded.settings, schedule = excluded.schedule, updated_at = now()`,
    [audience.name, audience.file, identifier, JSON.stringify({ onExit: audience.onExit, updateExistingOnly: audience.updateExistingOnly, timezone: audience.timezone }), audience.schedule ?? null],
  );
}
