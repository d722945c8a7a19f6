/**
 * Moves the snapshot forward for members Braze accepted, in one statement per batch. `attrs`
 * is the exact jsonb text the delta query produced (never re-serialised by JavaScript, which
 * would round numerics and cause false changes next run); NULL means the member exited.
 */
import { escapeIdentifier, type Queryable } from '../db/pool.js';

export interface ConfirmedMember {
  identifier: string;
  memberKey: string;
  /** The member's attributes now held by Braze (jsonb text, as PostgreSQL wrote it), or null when it exited. */
  attrs: string | null;
  /** The hash of the result row the attributes came from. */
  rowHash?: string | null;
}

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
