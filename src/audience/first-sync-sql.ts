/**
 * A first sync's plan (the snapshot holds nothing of the audience), in one statement: every
 * keyed row of the result is a new member, so its delta is built as the query is read, in key
 * order, straight into pg_temp.bb_delta. The result is never stored by itself: storing it, then
 * reading it back for its duplicates and again for the deltas, cost the server 3 to 9 CPU-s more
 * per million new members (whole first syncs, alternating, PostgreSQL 15).
 *
 * Duplicated keys are counted by a window over the sorted rows (no aggregate of their own), and
 * their rows, with those without a key, are written with kinds of their own ('duplicate',
 * 'keyless'): firstSyncCountsSql counts them and moves them out afterwards.
 * bb_delta has the columns deltaSql (plan-sql.ts) gives it.
 */
import type { Audience } from '../types.js';
import type { MemberSql } from './member-sql.js';
import { sqlLiteral } from '../db/pool.js';
import { memberGroup, type Statement } from './plan-sql.js';

/** bb_delta and bb_dups, empty: made before the read-only transaction that fills them. No parameters. */
export const CREATE_FIRST_SYNC_TABLES = [
  `CREATE TEMP TABLE bb_delta (seq bigint, identifier text, member_key text, row_hash bigint, invalid text, kind text, unverified boolean,
     has_old boolean, attrs_in_payload boolean, new_attrs json, payload json, present text, alters boolean)`,
  'CREATE TEMP TABLE bb_dups (member_key text, grp text, n bigint)',
];

/**
 * The statement: the audience query, each row's key and row hash ($1, the column signature,
 * hashed into it) over `filling` (alias q), sorted by key, and the delta of each new member over
 * `member` (alias h). Emails are one member whatever their case (as Braze matches them): they
 * are grouped by the lowered key, and sorted by it first, so one sort serves the window and the
 * order the snapshot is recorded in (the same order where emails are stored in lower case).
 * `prefix` precedes the audience's SQL.
 */
export function firstSyncSql(audience: Audience, filling: MemberSql, member: MemberSql, serverVersion: number): Statement & { prefix: string } {
  // A group apart from the key only where they differ (emails): sorted by it first.
  const email = memberGroup(member.identifier, 'k') !== 'k';
  const group = email ? '"__bb_grp"' : '"__bb_key"';
  // The audience's SQL goes where the marker is, inside the rows the member expressions read.
  const marker = '\u0000audience\u0000';
  const rows = member.rowsFrom(`(SELECT count(*) OVER (PARTITION BY ${group}) AS "__bb_n", x.* FROM (
             SELECT ${email ? `${memberGroup(member.identifier, 'c."__bb_key"')} AS "__bb_grp", ` : ''}c.* FROM (
               SELECT ${filling.key} AS "__bb_key", ${filling.rowHash(serverVersion)} AS "__bb_hash", q.* FROM (
${marker}
) AS q) AS c ORDER BY ${email ? '"__bb_grp", ' : ''}"__bb_key") AS x)`);
  const text = `INSERT INTO pg_temp.bb_delta (seq, identifier, member_key, row_hash, invalid, kind, unverified, has_old, attrs_in_payload, new_attrs, payload, present, alters)
     SELECT row_number() OVER (), ${sqlLiteral(member.identifier)}, d.member_key, d.row_hash, d.invalid, d.kind, false, false, d.kind = 'new', NULL,
            CASE WHEN d.kind = 'new' THEN d.new_json::json END, CASE WHEN d.kind = 'new' THEN d.present END, false
       FROM (
       SELECT d.*, CASE WHEN d.member_key IS NULL THEN 'keyless' WHEN d.n > 1 THEN 'duplicate' WHEN d.invalid IS NOT NULL THEN 'invalid' ELSE 'new' END AS kind
         FROM (
         SELECT h."__bb_key" AS member_key, h."__bb_hash" AS row_hash, h."__bb_n" AS n,
                CASE WHEN h."__bb_key" IS NOT NULL AND h."__bb_n" = 1 THEN ${member.attrs} END AS new_json,
                CASE WHEN h."__bb_key" IS NOT NULL AND h."__bb_n" = 1 THEN ${member.present} END AS present,
                CASE WHEN h."__bb_key" IS NOT NULL AND h."__bb_n" = 1 THEN ${member.invalid} END AS invalid
           FROM ${rows}
         -- Fenced: the kind reads the checks' result, which must be computed once per member.
         OFFSET 0) AS d
       OFFSET 0) AS d`;
  const at = text.indexOf(marker);
  const prefix = text.slice(0, at);
  return { text: `${prefix}${audience.sql}${text.slice(at + marker.length)}`, values: [filling.signature], prefix };
}

/**
 * After firstSyncSql: the duplicated keys' rows into bb_dups (a row per row of a group, as
 * duplicatesSql in plan-sql.ts), those and the keyless rows out of bb_delta. Returns the result's
 * rows (every row has its place in bb_delta's order) and those without a key. Counted here, not
 * as the rows were written: returning a million rows' kinds from the insert cost more than
 * reading bb_delta twice. No parameters.
 */
export function firstSyncCountsSql(identifier: string): string {
  const norm = memberGroup(identifier, 'member_key');
  return `WITH gone AS (DELETE FROM pg_temp.bb_delta WHERE kind IN ('duplicate', 'keyless') RETURNING member_key, kind),
     dups AS (INSERT INTO pg_temp.bb_dups SELECT member_key, ${norm}, count(*) OVER (PARTITION BY ${norm}) FROM gone WHERE kind = 'duplicate')
   SELECT (SELECT coalesce(max(seq), 0) FROM pg_temp.bb_delta) AS rows, count(*) FILTER (WHERE kind = 'keyless') AS nulls FROM gone`;
}
