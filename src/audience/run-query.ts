/**
 * Runs an audience's query once, read-only: a first sync's into its deltas (first-sync-sql.ts),
 * a later run's compared with the snapshot as it is read (plan-sql.ts); and turns its errors
 * into one line that points at the file without quoting people's data.
 */
import { AudienceError, ConfigError, DatabaseError } from '../errors.js';
import type { Connection } from '../db/pool.js';
import type { Audience } from '../types.js';
import type { MemberSql } from './member-sql.js';
import { compareCurrentSql, createComparisonSql, DROP_PLAN_TABLES, type Statement } from './plan-sql.js';
import { CREATE_FIRST_SYNC_TABLES, firstSyncCountsSql, firstSyncSql } from './first-sync-sql.js';

export type Column = { name: string; typeOid: number; typmod: number };

export interface FillOptions {
  statementTimeoutMs?: number;
}

/**
 * A first sync: run the audience query once, read-only, and build every member's delta from it
 * in key order into pg_temp.bb_delta (see firstSyncSql): `filling` is the member SQL over the
 * query's rows, `member` over the rows with their key. Returns the number of result rows, and
 * of those without a key.
 */
export async function planFirstSync(
  conn: Connection,
  audience: Audience,
  filling: MemberSql,
  member: MemberSql,
  { statementTimeoutMs }: FillOptions,
): Promise<{ rows: number; nulls: number }> {
  const version = await prepare(conn);
  for (const sql of CREATE_FIRST_SYNC_TABLES) await conn.query(sql);
  await runReadOnly(conn, audience, firstSyncSql(audience, filling, member, version), statementTimeoutMs, 'on a first sync it also covers building every member\'s payload as the rows are read');
  return counted((await conn.query<Counted>(firstSyncCountsSql(member.identifier))).rows[0]);
}

/**
 * Run the audience query once, read-only, and compare it with the snapshot as it is read: only
 * the candidates are stored (pg_temp.bb_cand, with the duplicated keys among them in bb_dups;
 * see compareCurrentSql). Returns the number of result rows, and of those without a key.
 */
export async function compareCurrent(
  conn: Connection,
  audience: Audience,
  columns: Column[],
  member: MemberSql,
  snapshots: string,
  { statementTimeoutMs, backfillSince }: FillOptions & { backfillSince?: Date },
): Promise<{ rows: number; nulls: number }> {
  const version = await prepare(conn);
  const defs = await columnDefs(conn, columns);
  for (const sql of createComparisonSql(defs)) await conn.query(sql);
  return counted(await runReadOnly<Counted>(conn, audience, compareCurrentSql(snapshots, audience, defs.map((d) => d.name), member, version, { backfillSince }), statementTimeoutMs));
}

/** Drop the planning tables; the server's version. */
async function prepare(conn: Connection): Promise<number> {
  await conn.query(DROP_PLAN_TABLES);
  const version = Number((await conn.query<{ v: string }>('SELECT current_setting($1) AS v', ['server_version_num'])).rows[0]!.v);
  // Planning and recording use WITH … AS MATERIALIZED: on an older server every audience would
  // fail with a syntax error that names no cause.
  if (version < 120000) throw new ConfigError([`audience sync needs PostgreSQL 12 or newer; this server is ${Math.floor(version / 10000)}`]);
  return version;
}

/**
 * The result's column definitions, for tables made from the described column types: the
 * audience's text never reaches a statement outside the read-only transaction.
 */
async function columnDefs(conn: Connection, columns: Column[]): Promise<Array<{ name: string; type: string }>> {
  const { rows: typeNames } = await conn.query<{ t: string }>(
    'SELECT format_type(o, m) AS t FROM unnest($1::oid[], $2::int[]) WITH ORDINALITY AS u(o, m, i) ORDER BY i',
    [columns.map((c) => c.typeOid), columns.map((c) => c.typmod)],
  );
  return columns.map((c, i) => ({ name: c.name, type: typeNames[i]!.t }));
}

type Counted = { rows: string; nulls: string };
const counted = (r: Counted | undefined) => ({ rows: Number(r?.rows ?? 0), nulls: Number(r?.nulls ?? 0) });

/** Run a statement holding the audience's SQL in a read-only transaction; returns its first row, if any. */
async function runReadOnly<T extends object>(
  conn: Connection,
  audience: Audience,
  fill: Statement & { prefix: string },
  statementTimeoutMs: number | undefined,
  timed?: string,
): Promise<T | undefined> {
  // READ ONLY: an audience file cannot change the warehouse, even through a function it calls.
  // The statement has parameters, so it goes through the extended protocol: one statement only.
  await conn.query('BEGIN READ ONLY');
  try {
    if (statementTimeoutMs) await conn.query(`SELECT set_config('statement_timeout', $1, true)`, [String(statementTimeoutMs)]);
    // The planning tables live in pg_temp, which PostgreSQL searches first unless the path names
    // it: a table of the user's called bb_delta or bb_dups would be read as ours. Searched last.
    await conn.query(`SELECT set_config('search_path', CASE WHEN current_setting('search_path') = '' THEN 'pg_temp' ELSE current_setting('search_path') || ', pg_temp' END, true)`);
    // READ ONLY does not stop a SELECT from changing the session itself (set_config(…, false),
    // pg_advisory_unlock_all(), …): that would outlive the transaction on a connection that
    // holds this audience's lock and serves the tool afterwards. Compare before and after.
    const before = await sessionState(conn);
    const filled = (await conn.query<T>(fill.text, fill.values)).rows[0];
    const after = await sessionState(conn);
    if (after !== before) {
      // Rolled back, settings changed in this transaction revert; advisory locks are not
      // transactional, so every one this session holds is let go (this audience's own lock was
      // taken or lost by the query anyway; the run stops here).
      await conn.query('ROLLBACK');
      await conn.query('SELECT pg_advisory_unlock_all()');
      throw new AudienceError(audience.file, 'the query changed session settings or advisory locks (set_config(…, false), pg_advisory_*): audience queries may only read');
    }
    await conn.query('COMMIT');
    return filled;
  } catch (error) {
    await conn.query('ROLLBACK').catch(() => {});
    throw queryError(error, audience, fill.prefix, timed);
  }
}

/** This session's settings and advisory locks, as one comparable text. */
async function sessionState(conn: Connection): Promise<string> {
  const { rows } = await conn.query<{ s: string }>(
    `SELECT coalesce((SELECT string_agg(name || '=' || setting, ',' ORDER BY name) FROM pg_settings WHERE source IN ('session', 'client')), '')
            || '|' || coalesce((SELECT string_agg(classid || ':' || objid || ':' || objsubid || ':' || mode, ',' ORDER BY classid, objid, objsubid, mode)
                                 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()), '') AS s`,
  );
  return rows[0]!.s;
}

/**
 * A PostgreSQL error in the audience query, pointed at the file's line, without the values it
 * may quote (`invalid input syntax for type integer: "ann@example.com"`): errors reach logs,
 * the run history and the notify webhook, and people's data must not. `prefix` is the statement's
 * text before the audience's SQL; `timed`, what --statement-timeout covered besides the query.
 */
export function queryError(error: unknown, audience: Audience, prefix: string, timed?: string): unknown {
  if (!(error instanceof DatabaseError)) return error;
  let line: number | undefined;
  let detail = withoutValues(error.message, error.code);
  if (error.position !== undefined) {
    // PostgreSQL counts characters; a JavaScript string's length and slices count UTF-16 units,
    // two for a character beyond U+FFFF (an emoji in a column name or a comment).
    const offset = error.position - 1 - [...prefix].length;
    const sql = [...audience.sql];
    if (offset >= 0 && offset <= sql.length) {
      const before = sql.slice(0, offset).join('');
      line = audience.sqlLine + (before.match(/\n/g)?.length ?? 0);
      if (sql[offset] === ';') detail = 'more than one statement: an audience file holds exactly one SELECT';
    }
  }
  if (error.code === '25006') detail = `the query tries to write (${error.message}); audience queries run read-only`;
  if (error.code === '57014') detail = `the query was cancelled: it ran longer than --statement-timeout${timed ? ` (${timed})` : ''} (or an administrator cancelled it)`;
  if (error.code === '42601' && /multiple commands/.test(error.message)) detail = 'more than one statement: an audience file holds exactly one SELECT';
  return new AudienceError(audience.file, detail, line, { cause: error });
}

/**
 * A server message without the values it may quote. PostgreSQL does not escape quotes inside a
 * quoted value, so a quoted part cannot be cut out reliably: for any error class not known to
 * quote only names (syntax and undefined objects, 42; transaction and connection states),
 * everything from the first quote on is replaced. Data errors (22, 23), RAISE in a function
 * (P0), foreign data (HV) and internal errors all lose their quoted part.
 */
export function withoutValues(message: string, code: string | undefined): string {
  if (code && /^(42|0A|25|08|53|57|40)/.test(code)) return message;
  const quote = message.search(/["']/);
  return quote < 0 ? message : `${message.slice(0, quote).replace(/[\s:]+$/, '')}: (value hidden)`;
}
