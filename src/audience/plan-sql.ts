/**
 * The statements that plan an audience's deltas, as named builders. They work on temporary
 * tables of the planning session, in this order:
 *
 *   bb_current  the audience's result, materialised once: member key, row hash, the columns
 *   bb_cand     candidates: rows whose hash differs from the snapshot's, and snapshot members
 *               gone from the result (reads the snapshot's keys and hashes only)
 *   bb_dups     member keys that appear in more than one row (neither row is sent)
 *   bb_delta    per candidate member: kind, the attributes now, and the exact payload to send
 *
 * `snapshots` is the snapshot table (or an empty stand-in when planning against a database
 * never synced), as `snapshotSource` in snapshot-store.ts names it. Each builder says which
 * parameters its statement takes.
 */
import type { Audience } from '../types.js';
import type { MemberSql } from './member-sql.js';

export interface Statement {
  text: string;
  values: unknown[];
}

export const DROP_PLAN_TABLES = 'DROP TABLE IF EXISTS pg_temp.bb_current, pg_temp.bb_cand, pg_temp.bb_dups, pg_temp.bb_delta';

/** The wrapper around the audience's SELECT; its length locates errors in the file. */
export const DESCRIBE_PREFIX = 'SELECT * FROM (\n';
export function describeSql(audience: Audience): string {
  return `${DESCRIBE_PREFIX}${audience.sql}\n) AS q LIMIT 0`;
}

/** bb_current's shape, from the query's column types; WITH NO DATA plans the query but does not run it. No parameters. */
export function createCurrentSql(audience: Audience): string {
  return `CREATE TEMP TABLE bb_current AS SELECT NULL::text AS "__bb_key", NULL::bigint AS "__bb_hash", q.* FROM (\n${audience.sql}\n) AS q WITH NO DATA`;
}

/**
 * Runs the audience query once into bb_current with each row's key and value hash.
 * $1 the column signature hashed into every row. `prefix` is the text before the audience's SQL.
 */
export function fillCurrentSql(audience: Audience, member: MemberSql, serverVersion: number): Statement & { prefix: string } {
  const prefix = `INSERT INTO pg_temp.bb_current SELECT ${member.key}, ${member.rowHash(serverVersion)}, q.* FROM (\n`;
  return { text: `${prefix}${audience.sql}\n) AS q`, values: [member.signature], prefix };
}

/**
 * bb_cand: rows whose hash differs from the snapshot's, and snapshot members gone from the
 * result; with backfill, every member. $1 audience, $2 identifier kind, $3 backfill.
 */
export function candidatesSql(snapshots: string, audience: Audience, identifier: string, backfill: boolean): Statement {
  return {
    text: `CREATE TEMP TABLE bb_cand AS
     SELECT c.*, s.identifier AS "__bb_s_ident", s.member_key AS "__bb_s_key"
       FROM (SELECT $2::text AS "__bb_ident", * FROM pg_temp.bb_current WHERE "__bb_key" IS NOT NULL) AS c
       FULL JOIN (SELECT identifier, member_key, row_hash FROM ${snapshots} AS sn WHERE sn.audience = $1) AS s
         ON s.identifier = c."__bb_ident" AND s.member_key = c."__bb_key"
      WHERE $3 OR c."__bb_hash" IS DISTINCT FROM s.row_hash`,
    values: [audience.name, identifier, backfill],
  };
}

/**
 * bb_dups: two rows for one member; we cannot know which is right, so neither is sent. Only
 * candidate keys can change anything, so only those are counted (identical copies of an
 * unchanged member change nothing). No parameters.
 */
export const DUPLICATES_SQL = `CREATE TEMP TABLE bb_dups AS
     SELECT "__bb_key" AS member_key, count(*) AS n FROM pg_temp.bb_current
      WHERE "__bb_key" IN (SELECT "__bb_key" FROM pg_temp.bb_cand) GROUP BY 1 HAVING count(*) > 1`;

/**
 * bb_delta, for candidates only: the Braze JSON, the validation, the comparison and the payload.
 * New members get every non-NULL attribute; changed members only the attributes whose value
 * differs (NULL is sent as null); exited members their @on_exit; with backfill, every member
 * its full set. $1 audience, $2 backfill, $3 on_exit kind, $4 on_exit values (JSON) or NULL.
 */
export function deltaSql(snapshots: string, audience: Audience, member: MemberSql, backfill: boolean): Statement {
  const nullsFor = (attrs: string, where = 'true') => `(SELECT jsonb_object_agg(k, 'null'::jsonb) FROM jsonb_object_keys(${attrs}) AS k WHERE ${where})`;
  return {
    text: `CREATE TEMP TABLE bb_delta AS
     SELECT d.identifier, d.member_key, d.row_hash, d.invalid, d.new_attrs, d.kind,
            CASE WHEN d.kind = 'exited' THEN
                   CASE $3 WHEN 'keep' THEN NULL WHEN 'set' THEN $4::jsonb ELSE ${nullsFor('d.old_attrs')} END
                 WHEN d.kind = 'invalid' THEN NULL
                 WHEN $2 OR d.kind = 'new' THEN d.new_attrs || coalesce(${nullsFor('d.old_attrs', 'NOT d.new_attrs ? k')}, '{}'::jsonb)
                 WHEN d.kind = 'unchanged' THEN NULL
                 ELSE (SELECT jsonb_object_agg(k, coalesce(d.new_attrs -> k, 'null'::jsonb))
                         FROM (SELECT jsonb_object_keys(d.new_attrs) UNION SELECT jsonb_object_keys(d.old_attrs)) AS t(k)
                        WHERE d.new_attrs -> k IS DISTINCT FROM d.old_attrs -> k)
            END AS payload
       FROM (
         SELECT j.*, CASE WHEN j.exited THEN 'exited' WHEN j.invalid IS NOT NULL THEN 'invalid' WHEN j.old_attrs IS NULL THEN 'new'
                          WHEN j.new_attrs = j.old_attrs THEN 'unchanged' ELSE 'changed' END AS kind
           FROM (
             SELECT coalesce(h."__bb_s_ident", h."__bb_ident") AS identifier, coalesce(h."__bb_key", h."__bb_s_key") AS member_key,
                    h."__bb_key" IS NULL AS exited, h."__bb_hash" AS row_hash,
                    (SELECT full_s.attrs FROM ${snapshots} AS full_s
                      WHERE full_s.audience = $1 AND full_s.identifier = h."__bb_s_ident" AND full_s.member_key = h."__bb_s_key") AS old_attrs,
                    CASE WHEN h."__bb_key" IS NOT NULL THEN ${member.attrs} END AS new_attrs,
                    CASE WHEN h."__bb_key" IS NOT NULL THEN ${member.invalid} END AS invalid
               FROM pg_temp.bb_cand AS h
              WHERE h."__bb_key" IS NULL OR h."__bb_key" NOT IN (SELECT member_key FROM pg_temp.bb_dups)
             -- A fence: without it the planner inlines this level and repeats the lookups
             -- and the JSON building once per reference above.
             OFFSET 0
           ) AS j
       ) AS d`,
    values: [audience.name, backfill, audience.onExit.kind, audience.onExit.kind === 'set' ? JSON.stringify(audience.onExit.values) : null],
  };
}

/** Members per kind, and how many of them need a request. No parameters. */
export const KIND_COUNTS_SQL = `SELECT kind, count(*) AS n, count(*) FILTER (WHERE kind <> 'invalid' AND payload IS NOT NULL AND payload <> '{}'::jsonb) AS sendable
       FROM pg_temp.bb_delta GROUP BY kind`;

/** Rows without a key, rows with one, and duplicated keys and their rows. No parameters. */
export const KEY_COUNTS_SQL = `SELECT (SELECT count(*) FROM pg_temp.bb_current WHERE "__bb_key" IS NULL) AS nulls,
            (SELECT count(*) FROM pg_temp.bb_current WHERE "__bb_key" IS NOT NULL) AS keyed,
            (SELECT count(*) FROM pg_temp.bb_dups) AS dup_keys, (SELECT coalesce(sum(n), 0) FROM pg_temp.bb_dups) AS dup_rows`;

/** Data points per attribute in the planned payloads. No parameters. */
export const PER_ATTRIBUTE_SQL = `SELECT k, count(*) AS n FROM pg_temp.bb_delta, jsonb_object_keys(payload) AS k WHERE payload IS NOT NULL GROUP BY k ORDER BY k`;

/** Members that cannot be sent and why: validation failures and duplicated keys. No parameters. */
export const UNSENDABLE_SQL = `SELECT member_key, reason FROM (
       SELECT DISTINCT ON (member_key) member_key, invalid AS reason FROM pg_temp.bb_delta WHERE kind = 'invalid' ORDER BY member_key
     ) AS i
     UNION ALL SELECT member_key, 'identifier appears in ' || n || ' rows of the result' FROM pg_temp.bb_dups`;

/**
 * The deltas that need a request, streamed by a cursor: the payload as JSON text straight from
 * PostgreSQL (never re-serialised), its attribute names separated by U+001F for the counts,
 * and what the snapshot becomes once Braze accepts it. No parameters.
 */
export const DELTAS_TO_SEND_SQL = `SELECT identifier, member_key, kind, payload::text AS payload, array_to_string(ARRAY(SELECT jsonb_object_keys(payload)), E'\\x1f') AS keys,
       new_attrs::text AS new_attrs, row_hash::text AS row_hash
  FROM pg_temp.bb_delta WHERE kind <> 'invalid' AND payload IS NOT NULL AND payload <> '{}'::jsonb`;
