/**
 * Moves the snapshot forward for members Braze accepted, in one statement per batch. `attrs`
 * is the exact jsonb text the delta query produced (never re-serialised by JavaScript, which
 * would round numerics and cause false changes next run); NULL means the member exited.
 */
import { escapeIdentifier, type Queryable } from '../db/pool.js';

export interface ConfirmedMember {
  identifier: string;
  memberKey: string;
  /** The member's attributes now held by Braze (jsonb text), or null when it exited. */
  attrs: string | null;
  /** The hash of the result row the attributes came from. */
  rowHash?: string | null;
}

export async function advanceSnapshot(db: Queryable, schema: string, audience: string, runId: number | null, members: readonly ConfirmedMember[]): Promise<void> {
  if (members.length === 0) return;
  const s = escapeIdentifier(schema);
  await db.query(
    `WITH confirmed AS (
       SELECT * FROM unnest($2::text[], $3::text[], $4::text[], $6::uuid[]) AS u(identifier, member_key, attrs, row_hash)
     ), upserted AS (
       INSERT INTO ${s}.snapshots AS t (audience, identifier, member_key, attrs, row_hash, confirmed_at, confirmed_run)
       SELECT $1, identifier, member_key, attrs::jsonb, row_hash, now(), $5 FROM confirmed WHERE attrs IS NOT NULL
       ON CONFLICT (audience, identifier, member_key)
       DO UPDATE SET attrs = excluded.attrs, row_hash = excluded.row_hash, confirmed_at = excluded.confirmed_at, confirmed_run = excluded.confirmed_run
       RETURNING 1
     )
     DELETE FROM ${s}.snapshots t USING confirmed c
      WHERE c.attrs IS NULL AND t.audience = $1 AND t.identifier = c.identifier AND t.member_key = c.member_key`,
    [audience, members.map((m) => m.identifier), members.map((m) => m.memberKey), members.map((m) => m.attrs), runId, members.map((m) => m.rowHash ?? null)],
  );
}
