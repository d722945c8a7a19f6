/**
 * The statements that plan an audience's deltas, as named builders. They work on temporary
 * tables of the planning session, in this order:
 *
 *   bb_current  a retire's (empty) result: member key, row hash (later runs compare the result
 *               with the snapshot as it is read, compareCurrentSql; a first sync builds its
 *               deltas as it reads the result, first-sync-sql.ts)
 *   bb_cand     candidates: rows whose hash differs from the snapshot's, and members gone (the
 *               comparison reads the snapshot's keys and hashes only)
 *   bb_dups     member keys that appear in more than one row (neither row is sent)
 *   bb_delta    per candidate member: kind, the exact payload to send, and what Braze then holds (NEW_ATTRS)
 *
 * `snapshots` is the snapshot table (or an empty stand-in when planning against a database
 * never synced), as `snapshotSource` in snapshot-store.ts names it. Each builder says which
 * parameters its statement takes.
 */
import type { Audience } from '../types.js';
import { jsonKeyLiteral, jsonObjectText, type MemberSql } from './member-sql.js';
import { escapeIdentifier, sqlLiteral } from '../db/pool.js';
import { STANDARD_FIELDS } from '../braze/standard-fields.js';

export interface Statement {
  text: string;
  values: unknown[];
}

/** The planning session's tables. No parameters. */
export const DROP_PLAN_TABLES = 'DROP TABLE IF EXISTS pg_temp.bb_current, pg_temp.bb_cand, pg_temp.bb_dups, pg_temp.bb_delta';

/** The wrapper around the audience's SELECT; errors in the file are located past its text (queryError). */
export const DESCRIBE_PREFIX = 'SELECT * FROM (\n';
export function describeSql(audience: Audience): string {
  return `${DESCRIBE_PREFIX}${audience.sql}\n) AS q LIMIT 0`;
}

/** bb_cand for a retire: every snapshot member of the audience, those who left too (bb_current is empty). $1 audience, $2 identifier kind. */
export function retireCandidatesSql(snapshots: string, audience: Audience, identifier: string): Statement {
  return {
    text: `CREATE TEMP TABLE bb_cand AS
     SELECT c.*, s.identifier AS "__bb_s_ident", s.member_key AS "__bb_s_key", s.present AS "__bb_s_present", s.unverified AS "__bb_s_unverified"
       FROM (SELECT identifier, member_key, present, unverified FROM ${snapshots} AS sn WHERE sn.audience = $1) AS s
       LEFT JOIN (SELECT $2::text AS "__bb_ident", * FROM pg_temp.bb_current) AS c ON false`,
    values: [audience.name, identifier],
  };
}

/** bb_cand and bb_dups, empty, for compareCurrentSql, from the described columns (as createCurrentSql). No parameters. */
export function createComparisonSql(columns: Array<{ name: string; type: string }>): string[] {
  const defs = columns.map((c) => `, ${escapeIdentifier(c.name)} ${c.type}`).join('');
  return [
    `CREATE TEMP TABLE bb_cand ("__bb_ident" text, "__bb_key" text, "__bb_hash" bigint${defs}, "__bb_s_ident" text, "__bb_s_key" text, "__bb_s_present" boolean, "__bb_s_unverified" boolean)`,
    'CREATE TEMP TABLE bb_dups (member_key text, grp text, n bigint)',
  ];
}

/**
 * When the snapshot holds the audience: the query is compared with the snapshot as it is read,
 * in one statement that stores only the candidates (bb_cand) and the duplicated keys among them
 * (bb_dups). It holds each row narrow: its key and, for a candidate only, its bb_cand row (a
 * composite of that type). Holding every row's columns spilled to temporary files, read back
 * twice (a million rows, 1% changed: 3.1 s against 2.6 s). Returns the rows and those without a
 * key. `resultColumns`: the result's column names in order. $1 audience, $2 identifier kind, $3
 * the column signature, $4 backfill start (with a backfill). `prefix` precedes the audience's SQL.
 */
export function compareCurrentSql(
  snapshots: string,
  audience: Audience,
  resultColumns: readonly string[],
  member: MemberSql,
  serverVersion: number,
  options: { backfillSince?: Date } = {},
): Statement & { prefix: string } {
  const backfill = options.backfillSince !== undefined;
  const columns = (x: string) => resultColumns.map((c) => `, ${x}.${escapeIdentifier(c)}`).join('');
  const prefix = `WITH j AS MATERIALIZED (
       SELECT x."__bb_key", x."__bb_row", x."__bb_cand",
              CASE WHEN x."__bb_cand" THEN ROW($2::text, x."__bb_key", x."__bb_hash"${columns('x')}, x."__bb_s_ident", x."__bb_s_key", x."__bb_s_present", x."__bb_s_unverified")::pg_temp.bb_cand END AS "__bb_c"
         FROM (
         -- Fenced: the test is made once per row, not once per reading of it.
         SELECT c.*, s.*,
                -- A keyless result row is counted, never a candidate. Candidates: a hash that differs
                -- (one who left has none, so a return differs), members gone from the result, profiles
                -- not known to exist (sent in full each run), with a backfill those not backfilled since.
                (c."__bb_key" IS NOT NULL OR c."__bb_row" IS NULL)
                AND (c."__bb_hash" IS DISTINCT FROM s."__bb_s_hash" OR (s."__bb_s_unverified" AND c."__bb_key" IS NOT NULL)${backfill ? `
                     OR (c."__bb_key" IS NOT NULL AND (s."__bb_s_backfilled" IS NULL OR s."__bb_s_backfilled" < $4::timestamptz))` : ''}) AS "__bb_cand"
           FROM (SELECT ${member.key} AS "__bb_key", ${member.rowHash(serverVersion, '$3')} AS "__bb_hash", true AS "__bb_row", q.* FROM (
`;
  const rows = `${audience.sql}
) AS q) AS c
           FULL JOIN (SELECT sn.identifier AS "__bb_s_ident", sn.member_key AS "__bb_s_key", sn.row_hash AS "__bb_s_hash", sn.present AS "__bb_s_present",
                             sn.unverified AS "__bb_s_unverified"${backfill ? ', sn.backfilled_at AS "__bb_s_backfilled"' : ''}
                        FROM ${snapshots} AS sn WHERE sn.audience = $1) AS s
             ON s."__bb_s_ident" = $2::text AND s."__bb_s_key" = c."__bb_key"
         OFFSET 0) AS x
     )`;
  return {
    text: `${prefix}${rows},
     cand AS (INSERT INTO pg_temp.bb_cand SELECT (j."__bb_c").* FROM j WHERE j."__bb_cand" RETURNING "__bb_key"),
     dups AS (INSERT INTO pg_temp.bb_dups ${duplicateRows(member.identifier, 'j', 'cand')})
     SELECT count(*) FILTER (WHERE "__bb_row") AS rows, count(*) FILTER (WHERE "__bb_row" AND "__bb_key" IS NULL) AS nulls FROM j`,
    values: backfill ? [audience.name, member.identifier, member.signature, options.backfillSince] : [audience.name, member.identifier, member.signature],
    prefix,
  };
}

/**
 * bb_dups: two rows for one member; which is right is unknown, so neither is sent. Emails are one
 * member whatever their case (as Braze matches them). Only candidate keys can change anything
 * (identical copies of an unchanged member change nothing). A row per row of a duplicated group.
 */
export function duplicatesSql(identifier: string): string {
  return `CREATE TEMP TABLE bb_dups AS
     ${duplicateRows(identifier, 'pg_temp.bb_current', 'pg_temp.bb_cand')}`;
}

/**
 * The group a member key belongs to, as SQL over `key`: rows of one group are one member. Braze
 * matches emails whatever their case; every other identifier is the key itself.
 */
export function memberGroup(identifier: string, key: string): string {
  return identifier === 'email' ? `lower(${key})` : key;
}

/** bb_dups's rows: the result `rows`, the candidates `cand` (both with "__bb_key"); see duplicatesSql. */
function duplicateRows(identifier: string, rows: string, cand: string): string {
  const norm = (key: string) => memberGroup(identifier, key);
  // Counted per group (a hash aggregate, no sort); the few groups found are joined back.
  const candidate = (x: string) => `${x} IN (SELECT ${norm('c."__bb_key"')} FROM ${cand} AS c WHERE c."__bb_key" IS NOT NULL)`;
  return `SELECT r."__bb_key" AS member_key, g.grp, g.n FROM (
       SELECT ${norm('"__bb_key"')} AS grp, count(*) AS n FROM ${rows}
        WHERE "__bb_key" IS NOT NULL AND ${candidate(norm('"__bb_key"'))}
        GROUP BY 1 HAVING count(*) > 1
       OFFSET 0
     ) AS g JOIN ${rows} AS r ON ${norm('r."__bb_key"')} = g.grp`;
}

/**
 * bb_delta, for candidates only: the Braze JSON, the validation, the comparison, the payload,
 * and `new_attrs`, what Braze holds of this audience once the payload is accepted. Both are
 * json: a new member's attributes are built as text and stay text (its payload), and jsonb is
 * made only where something is compared with what the snapshot held (building jsonb for every
 * member of a first sync, then writing it back out as text, cost twice the text itself).
 *
 * - new members get every non-NULL attribute; a member coming back is compared with what Braze
 *   still holds from before (attributes now NULL are unset, unchanged ones are not sent);
 * - changed members get only the attributes whose value differs (NULL is sent as null);
 * - exited members get their @on_exit: unset sends null for the custom attributes only
 *   (standard profile fields stay, and stay in the snapshot), keep sends nothing, a JSON object
 *   sets those values; the member stays in the snapshot while Braze holds anything of ours;
 * - with a backfill, and for members whose profile is not known to exist, the full set.
 *
 * `alters` marks changes that modify or remove a value Braze holds (a new attribute appearing
 * for the first time does not): only those count for the guardrail.
 * $1 audience, $2 full set for everyone (backfill), $3 on_exit kind, $4 on_exit values (JSON)
 * or NULL, $5 the standard profile fields, $6 members who left earlier exit again (retire: the
 * audience's last @on_exit reaches what Braze still holds of them).
 */
export function deltaSql(snapshots: string, audience: Audience, member: MemberSql, backfill: boolean, exitLeftMembers = false): Statement {
  const nullsFor = (attrs: string, where = 'true') => `(SELECT jsonb_object_agg(k, 'null'::jsonb) FROM jsonb_object_keys(${attrs}) AS k WHERE ${where})`;
  const diff = diffSql(member.attributes.map((a) => a.name), (level) => `${level}.new_attrs`, (level) => `${level}.old_attrs`);
  return {
    text: `CREATE TEMP TABLE bb_delta AS
     SELECT row_number() OVER () AS seq, d.identifier, d.member_key, d.row_hash, d.invalid, d.kind, d.unverified, d.old_attrs IS NOT NULL AS has_old,
            d.kind NOT IN ('exited', 'invalid') AND d.old_attrs IS NULL AS attrs_in_payload,
            CASE WHEN d.kind = 'exited' THEN
                   CASE $3 WHEN 'keep' THEN d.old_attrs
                        -- Set values are what Braze now holds; a key set to null is held no more.
                        WHEN 'set' THEN (SELECT jsonb_object_agg(k, v) FROM jsonb_each(d.old_attrs || $4::jsonb) AS e(k, v) WHERE v <> 'null'::jsonb)
                        ELSE (SELECT jsonb_object_agg(k, v) FROM jsonb_each(d.old_attrs) AS e(k, v) WHERE k = ANY($5::text[])) END::json
                 -- Never recorded.
                 WHEN d.kind = 'invalid' THEN NULL
                 -- Kept once, as the payload (see NEW_ATTRS).
                 WHEN d.old_attrs IS NULL THEN NULL
                 ELSE d.new_json::json
            END AS new_attrs,
            CASE WHEN d.kind = 'exited' THEN
                   CASE $3 WHEN 'keep' THEN NULL WHEN 'set' THEN $4::jsonb ELSE ${nullsFor('d.old_attrs', 'NOT k = ANY($5::text[])')} END::json
                 WHEN d.kind = 'invalid' THEN NULL
                 WHEN d.old_attrs IS NULL THEN d.new_json::json
                 WHEN $2 OR d.unverified THEN (d.new_attrs || coalesce(${nullsFor('d.old_attrs', 'NOT d.new_attrs ? k')}, '{}'::jsonb))::json
                 WHEN d.kind = 'unchanged' THEN NULL
                 ELSE (${diff.payload})::json
            END AS payload,
            -- Which of the audience's columns a new member's payload carries ('1' or '0' each, in
            -- column order): what perAttributeSql counts, without parsing any payload.
            CASE WHEN d.kind NOT IN ('exited', 'invalid') AND d.old_attrs IS NULL THEN d.present END AS present,
            CASE WHEN d.kind = 'changed' THEN ${diff.alters} ELSE false END AS alters
       FROM (
         SELECT k.*, ${diff.columns}
           FROM (
         -- Fenced (OFFSET 0 below), as every level here: the kind is read a dozen times above,
         -- and comparing two objects for each reading cost more than the rest of the level.
         SELECT j.*, CASE WHEN j.exited THEN 'exited' WHEN j.invalid IS NOT NULL THEN 'invalid' WHEN j.old_attrs IS NULL OR NOT j.was_present THEN 'new'
                          WHEN j.new_attrs = j.old_attrs THEN 'unchanged' ELSE 'changed' END AS kind
           FROM (
           -- jsonb of the attributes, only for a member whose attributes from before it is compared with.
           SELECT i.*, CASE WHEN i.old_attrs IS NOT NULL THEN i.new_json::jsonb END AS new_attrs
             FROM (
             SELECT coalesce(h."__bb_s_ident", h."__bb_ident") AS identifier, coalesce(h."__bb_key", h."__bb_s_key") AS member_key,
                    h."__bb_key" IS NULL AS exited, h."__bb_hash" AS row_hash, coalesce(h."__bb_s_present", false) AS was_present,
                    coalesce(h."__bb_s_unverified", false) AS unverified,
                    -- Looked up only for members the snapshot has: a new member costs no index probe.
                    CASE WHEN h."__bb_s_key" IS NOT NULL THEN
                      (SELECT full_s.attrs::jsonb FROM ${snapshots} AS full_s
                        WHERE full_s.audience = $1 AND full_s.identifier = h."__bb_s_ident" AND full_s.member_key = h."__bb_s_key") END AS old_attrs,
                    CASE WHEN h."__bb_key" IS NOT NULL THEN ${member.attrs} END AS new_json,
                    CASE WHEN h."__bb_key" IS NOT NULL AND h."__bb_s_key" IS NULL THEN ${member.present} END AS present,
                    CASE WHEN h."__bb_key" IS NOT NULL THEN ${member.invalid} END AS invalid
               -- In the snapshot's key order: the lookups above then walk its index and rows in
               -- order (a million members, 1% changed: a quarter less time for this statement),
               -- and the changes are sent and recorded in that order too. A first sync's
               -- candidates have no snapshot key: the constant sorts nothing.
               FROM ${member.rowsFrom('(SELECT * FROM pg_temp.bb_cand ORDER BY "__bb_s_ident", "__bb_s_key")')}
              -- A snapshot member whose key today's rows repeat (emails differing only in case) is
              -- held back with them, not exited.
              -- (A NULL key is NOT IN an empty set: the second test names its rows' keys.)
              WHERE (h."__bb_key" IS NULL AND (h."__bb_s_present" OR $6) AND ${memberGroup(member.identifier, 'h."__bb_s_key"')} NOT IN (SELECT grp FROM pg_temp.bb_dups))
                 OR (h."__bb_key" IS NOT NULL AND h."__bb_key" NOT IN (SELECT member_key FROM pg_temp.bb_dups))
             -- A fence: without it the planner inlines this level and repeats the lookups
             -- and the JSON building once per reference above.
             OFFSET 0
           ) AS i
           OFFSET 0
           ) AS j
         OFFSET 0
         ) AS k
       OFFSET 0
       ) AS d`,
    values: [audience.name, backfill, audience.onExit.kind, audience.onExit.kind === 'set' ? JSON.stringify(audience.onExit.values) : null, [...STANDARD_FIELDS], exitLeftMembers],
  };
}

/**
 * A changed member's payload over jsonb `n` (its attributes now) and `o` (before), as JSON text:
 * each column whose value differs, with its value now or null, and null for each attribute from
 * before that is no longer a column; and `alters`, whether it changes or removes a value Braze
 * holds. Column by column, without listing either object's keys (a per-member union and
 * aggregate of the keys cost three times as much for a change of every member).
 *
 * What both read is computed once per member compared a level below (`columns`, over `k`): which
 * columns differ, as a boolean array, and the attributes no column holds any more. Written out
 * in both, the lookups in the two objects were made three times per column (a third of a
 * million changed members: this was most of the statement's time).
 */
function diffSql(columns: readonly string[], n: (level: string) => string, o: (level: string) => string): { columns: string; payload: string; alters: string } {
  const cols = `ARRAY[${columns.map(sqlLiteral).join(', ')}]::text[]`;
  const differs = (c: string) => `(${o('k')} -> ${sqlLiteral(c)}) IS DISTINCT FROM (${n('k')} -> ${sqlLiteral(c)})`;
  // Changed members, and members coming back, compared with what Braze still holds from before.
  const changed = (x: string) => `CASE WHEN k.kind IN ('changed', 'new') AND k.old_attrs IS NOT NULL THEN ${x} END`;
  // Attributes from before that are no column any more (removed from the query): unset.
  const gone = 'd."__bb_gone"';
  const differed = (i: number) => `d."__bb_differs"[${i + 1}]`;
  const entries = columns.map((c, i) => `CASE WHEN ${differed(i)} THEN ${jsonKeyLiteral(c)} || coalesce((${n('d')} -> ${sqlLiteral(c)})::text, 'null') END`);
  entries.push(`CASE WHEN ${gone} <> '{}'::jsonb THEN (SELECT string_agg(to_json(k)::text || ':null', ',') FROM jsonb_object_keys(${gone}) AS k) END`);
  return {
    columns: `${changed(`${o('k')} - ${cols}`)} AS "__bb_gone", ${changed(`ARRAY[${columns.map(differs).join(', ')}]::boolean[]`)} AS "__bb_differs"`,
    payload: jsonObjectText(entries),
    alters: `(${gone} <> '{}'::jsonb${columns.map((c, i) => ` OR (${differed(i)} AND ${o('d')} ? ${sqlLiteral(c)})`).join('')})`,
  };
}

/**
 * What Braze holds of the audience once a delta's payload is accepted, as an expression over a
 * bb_delta row. A member without attributes from before is sent exactly what it will hold: that
 * JSON is kept once, as the payload (a first sync would otherwise write every member's
 * attributes twice into bb_delta, and read them twice).
 */
export const NEW_ATTRS = 'CASE WHEN attrs_in_payload THEN payload ELSE new_attrs END';

/**
 * Whether a bb_delta row's payload carries anything to send (never NULL itself): what delivery
 * reads, what the plan counts as sendable, and, negated, what is recorded without a request.
 */
export const SENDS = "(payload IS NOT NULL AND payload::text <> '{}')";
