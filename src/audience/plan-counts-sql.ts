/**
 * What a plan reports, counted from the planning session's tables (see plan-sql.ts): members
 * per kind, duplicated keys, data points per attribute, and the members that cannot be sent.
 * None takes parameters.
 */
import { sqlLiteral } from '../db/pool.js';
import { SENDS } from './plan-sql.js';

/** Members per kind, how many need a request, how many alter values Braze holds, how many are resent unverified. No parameters. */
export const KIND_COUNTS_SQL = `SELECT kind, count(*) AS n, count(*) FILTER (WHERE kind <> 'invalid' AND ${SENDS}) AS sendable,
            count(*) FILTER (WHERE alters) AS alters, count(*) FILTER (WHERE unverified AND kind <> 'exited') AS unverified
       FROM pg_temp.bb_delta GROUP BY kind`;

/** Duplicated keys and their rows. No parameters. */
export const DUPLICATE_COUNTS_SQL = `SELECT count(DISTINCT grp) AS dup_keys, count(*) AS dup_rows FROM pg_temp.bb_dups`;

/**
 * Data points per attribute in the planned payloads. A new member's payload carries exactly
 * the columns its `present` marks ('1' or '0' per column, in column order): those are counted
 * by position, in one pass, without parsing a payload. The others (changes, exits, returns)
 * may also unset older attributes, so their payloads' keys are listed. No parameters.
 */
export function perAttributeSql(columns: readonly string[]): string {
  // Most members carry every column: those are counted once (identical aggregates share one
  // state), and only the others are looked at column by column.
  const all = `'${'1'.repeat(columns.length)}'`;
  const own = columns.length === 0
    ? ''
    : `SELECT unnest(ARRAY[${columns.map(sqlLiteral).join(', ')}]::text[]) AS k,
              unnest(ARRAY[${columns.map((_, i) => `count(*) FILTER (WHERE present = ${all}) + count(*) FILTER (WHERE present <> ${all} AND substr(present, ${i + 1}, 1) = '1')`).join(', ')}]::bigint[]) AS n
         FROM pg_temp.bb_delta WHERE payload IS NOT NULL AND present IS NOT NULL
       UNION ALL `;
  return `SELECT k, sum(n)::bigint AS n FROM (
       ${own}SELECT k, count(*) AS n FROM pg_temp.bb_delta, json_object_keys(payload) AS k WHERE payload IS NOT NULL AND present IS NULL GROUP BY k
     ) AS a WHERE n > 0 GROUP BY k ORDER BY k`;
}

/** Members that cannot be sent and why: validation failures and duplicated keys. No parameters. */
export const UNSENDABLE_SQL = `SELECT member_key, reason FROM (
       SELECT DISTINCT ON (member_key) member_key, invalid AS reason FROM pg_temp.bb_delta WHERE kind = 'invalid' ORDER BY member_key
     ) AS i
     UNION ALL SELECT * FROM (
       SELECT DISTINCT ON (d.grp) d.member_key,
              'identifier appears in ' || d.n || ' rows of the result'
              || CASE WHEN EXISTS (SELECT 1 FROM pg_temp.bb_dups AS o WHERE o.grp = d.grp AND o.member_key <> d.member_key) THEN ' (differing only in case)' ELSE '' END
         FROM pg_temp.bb_dups AS d ORDER BY d.grp, d.member_key) AS g`;
