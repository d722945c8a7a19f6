/**
 * Plans one audience's run: runs its query once, read-only, into a temporary table, compares
 * it with the snapshot in SQL and leaves the deltas in pg_temp.bb_delta for delivery to stream.
 * Returns a typed Plan: the counts per kind, the members that cannot be sent and why, how many
 * members need a request, and the guardrail's verdict. Nothing here sends or records anything.
 */
import { AudienceError, DatabaseError } from '../errors.js';
import type { Connection, Database, Queryable } from '../db/pool.js';
import type { MemberFailure } from '../run/run-store.js';
import { emptyCounts, type Audience, type AudienceCounts, type IdentifierKind } from '../types.js';
import { buildMemberSql, resolveTypes, type MemberSql } from './member-sql.js';
import {
  allCandidatesSql,
  candidatesSql,
  createCurrentSql,
  DESCRIBE_PREFIX,
  describeSql,
  DROP_PLAN_TABLES,
  deltaSql,
  duplicatesSql,
  fillCurrentSql,
  DUPLICATE_COUNTS_SQL,
  KIND_COUNTS_SQL,
  perAttributeSql,
  UNSENDABLE_SQL,
} from './plan-sql.js';
import { countSnapshotMembers, snapshotSource } from './snapshot-store.js';

export type SyncMode = 'sync' | 'backfill' | 'plan';

export interface Plan {
  identifier: IdentifierKind;
  /** Planned counts; `plannedUpdates` and `plannedPerAttribute` are the data points a sync would send. */
  counts: AudienceCounts;
  /** Members that cannot be sent (validation, duplicate keys, missing identifier), with the reason. */
  failures: MemberFailure[];
  /** Members that need a request. */
  sendable: number;
  /** Members the snapshot held before this run. */
  existing: number;
  /** Whether the change is too large to send without --force, and what it consists of. */
  guardrail: Guardrail;
  /** The attributes this audience writes: its columns and its @on_exit keys. */
  attributes: string[];
  /** The audience's attribute columns in order: what a new member's `present` marks (MemberSql.present). */
  columns: string[];
}

export interface Guardrail {
  /** Share of existing members whose values change or who exit. */
  ratio: number;
  limit: number;
  tripped: boolean;
  /** Members leaving, and members whose values Braze holds would change (new attributes alone do not count). */
  exits: number;
  valueChanges: number;
  existing: number;
  /** The guardrail applies only from this many exits plus value changes. */
  minChangeCount: number;
  /** The likely reason for a large change, when one is evident. */
  cause?: string;
}

export interface PlanOptions {
  /** Planning only: read the snapshot even where the state schema is missing or older. */
  planning: boolean;
  /** Every member gets its full set (those not backfilled since `backfillSince`). */
  backfill: boolean;
  maxChangeRatio: number;
  minChangeCount: number;
  force: boolean;
  /** For a backfill: members not confirmed since this time get their full set. */
  backfillSince?: Date | null;
  /** What the audience looked like when it last ran: its file and its attributes. */
  previous?: { file: string; attributes: string[] };
  /** How long the audience's query may run (describe and materialise each). */
  statementTimeoutMs?: number;
  maxArrayLength?: number;
}

export interface DescribeOptions {
  statementTimeoutMs?: number;
  maxArrayLength?: number;
}

type Column = { name: string; typeOid: number; typmod: number };

/**
 * Resolve the audience's columns and build its member SQL; validates the file before anything
 * runs. The query is planned, never run, read-only, as one statement (pool.describe).
 */
export async function describeAudience(
  db: Database,
  conn: Queryable,
  audience: Audience,
  options: DescribeOptions = {},
): Promise<{ member: MemberSql; columns: Column[]; types: Awaited<ReturnType<typeof resolveTypes>> }> {
  let described;
  try {
    described = await db.describe(describeSql(audience), { statementTimeoutMs: options.statementTimeoutMs });
  } catch (error) {
    throw queryError(error, audience, DESCRIBE_PREFIX.length);
  }
  // PostgreSQL cuts a longer column name to 63 bytes with only a notice: the attribute would
  // reach Braze under a name nobody wrote.
  const truncated = described.notices.find((n) => n.code === '42622')?.message;
  if (truncated) throw new AudienceError(audience.file, `a column name is longer than PostgreSQL's 63 bytes (${truncated}): shorten it with AS`);
  const columns = described.columns;
  const types = await resolveTypes(conn, columns.map((c) => c.typeOid));
  // Expressions over the materialised row `h`; validated here, before anything runs.
  return { member: buildMemberSql(audience, columns, types, 'h', { maxArrayLength: options.maxArrayLength }), columns, types };
}

export async function planDeltas(db: Database, conn: Connection, schema: string, audience: Audience, options: PlanOptions): Promise<Plan> {
  const { member, columns, types } = await describeAudience(db, conn, audience, options);
  const { planning, backfill } = options;
  // The planning statements are large expressions over temporary tables: JIT compiling them
  // cost more than it saved (bb_delta for 100,000 new members: 4.1 s with JIT, 2.2 s without).
  // Off for them but not for the audience's own query, which runs with the server's setting;
  // the caller resets it with the connection's other settings.
  await conn.query('SET jit = off');
  const snapshots = await snapshotSource(conn, schema, planning);
  const held = await countSnapshotMembers(conn, snapshots, audience.name);
  await conn.query('RESET jit');
  // A first sync records every member: in key order, the snapshot's index grows at one end
  // instead of taking each key at a random place (a million new rows: 5.3 s instead of 7.5 s,
  // for a sort of 0.9 s). Later runs record few members, and sort nothing.
  const filling = buildMemberSql(audience, columns, types, 'q', { maxArrayLength: options.maxArrayLength });
  const { rows, nulls } = await materialiseCurrent(conn, audience, columns, filling, { statementTimeoutMs: options.statementTimeoutMs, byKey: held.rows === 0 });
  await conn.query('SET jit = off');
  if (held.rows > 0) {
    const candidates = candidatesSql(snapshots, audience, member.identifier, backfill ? { backfillSince: options.backfillSince ?? new Date() } : {});
    const candidateRows = (await conn.query(candidates.text, candidates.values)).rowCount ?? 0;
    await conn.query(duplicatesSql(member.identifier, candidateRows * 4 > rows ? 'most' : 'few'));
  } else {
    await conn.query(allCandidatesSql(member.identifier));
    await conn.query(duplicatesSql(member.identifier, 'all'));
  }
  const delta = deltaSql(snapshots, audience, member, backfill);
  await conn.query(delta.text, delta.values);

  const plan = await summarise(conn, member, rows, nulls);
  const existing = held.members;
  const attributes = [...member.attributes.map((a) => a.name), ...(audience.onExit.kind === 'set' ? Object.keys(audience.onExit.values) : [])];
  return { ...plan, identifier: member.identifier, existing, attributes, columns: member.attributes.map((a) => a.name), guardrail: guardrailOf(plan.counts, existing, audience, attributes, options) };
}

/**
 * The guardrail: stop before sending when exits plus value changes exceed the audience's limit
 * (`@max_change_ratio`, else --max-change-ratio) of its existing members, once there are at
 * least --min-change-count of them (a 2-member audience must not trip on every change).
 * Members gaining an attribute for the first time (a column added) are not removals.
 */
function guardrailOf(counts: AudienceCounts, existing: number, audience: Audience, attributes: string[], options: PlanOptions): Guardrail {
  const exits = counts.exited;
  const valueChanges = counts.valueChanges;
  const ratio = existing === 0 ? 0 : (exits + valueChanges) / existing;
  const limit = audience.maxChangeRatio ?? options.maxChangeRatio;
  const tripped = existing > 0 && exits + valueChanges >= options.minChangeCount && ratio > limit && !options.force;
  let cause: string | undefined;
  if (counts.members === 0 && existing > 0) cause = 'the query returned no members (no rows, or no row with an identifier)';
  else if (options.previous && options.previous.file !== audience.file) cause = `the file moved: it was last synced from ${options.previous.file}`;
  else if (options.previous) {
    const removed = options.previous.attributes.filter((a) => !attributes.includes(a));
    if (removed.length > 0) cause = `column(s) ${removed.join(', ')} no longer in the query`;
  }
  return { ratio, limit, tripped, exits, valueChanges, existing, minChangeCount: options.minChangeCount, cause };
}

/** Drop the planning session's temporary tables (also done before each plan). */
export async function dropPlanTables(conn: Connection): Promise<void> {
  await conn.query(DROP_PLAN_TABLES);
}

/**
 * Run the audience query once, read-only, into pg_temp.bb_current: the key, a hash of the
 * row's attribute values (seeded with the column signature), and the row's own columns. JSON
 * is built later, and only for rows whose hash differs from the snapshot's.
 */
/** Returns the number of result rows, and of those without a key. */
async function materialiseCurrent(
  conn: Connection,
  audience: Audience,
  columns: Column[],
  member: MemberSql,
  { statementTimeoutMs, byKey }: { statementTimeoutMs?: number; byKey: boolean },
): Promise<{ rows: number; nulls: number }> {
  await conn.query(DROP_PLAN_TABLES);
  const version = Number((await conn.query<{ v: string }>('SELECT current_setting($1) AS v', ['server_version_num'])).rows[0]!.v);
  // The table is made from the described column types: the audience's text never reaches a
  // statement outside the read-only transaction below.
  const { rows: typeNames } = await conn.query<{ t: string }>(
    'SELECT format_type(o, m) AS t FROM unnest($1::oid[], $2::int[]) WITH ORDINALITY AS u(o, m, i) ORDER BY i',
    [columns.map((c) => c.typeOid), columns.map((c) => c.typmod)],
  );
  await conn.query(createCurrentSql(columns.map((c, i) => ({ name: c.name, type: typeNames[i]!.t }))));
  const fill = fillCurrentSql(audience, member, version, byKey);
  // READ ONLY: an audience file cannot change the warehouse, even through a function it calls.
  // The statement has parameters, so it goes through the extended protocol: one statement only.
  await conn.query('BEGIN READ ONLY');
  try {
    if (statementTimeoutMs) await conn.query(`SELECT set_config('statement_timeout', $1, true)`, [String(statementTimeoutMs)]);
    // Exact float text in the row hash on every server version (lossy text could hide a change).
    await conn.query('SET LOCAL extra_float_digits = 3');
    // READ ONLY does not stop a SELECT from changing the session itself (set_config(…, false),
    // pg_advisory_unlock_all(), …): that would outlive the transaction on a connection that
    // holds this audience's lock and serves the tool afterwards. Compare before and after.
    const before = await sessionState(conn);
    const filled = (await conn.query<{ rows: string; nulls: string }>(fill.text, fill.values)).rows[0]!;
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
    return { rows: Number(filled.rows), nulls: Number(filled.nulls) };
  } catch (error) {
    await conn.query('ROLLBACK').catch(() => {});
    throw queryError(error, audience, fill.prefix.length);
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

async function summarise(conn: Connection, member: MemberSql, rows: number, nulls: number): Promise<Pick<Plan, 'counts' | 'failures' | 'sendable'>> {
  const { identifier } = member;
  const counts = emptyCounts();
  const kinds = await conn.query<{ kind: string; n: string; sendable: string; alters: string; unverified: string }>(KIND_COUNTS_SQL);
  const byKind = Object.fromEntries(kinds.rows.map((k) => [k.kind, Number(k.n)])) as Record<string, number | undefined>;
  const sendable = kinds.rows.reduce((n, k) => n + Number(k.sendable), 0);
  const r = (await conn.query<{ dup_keys: string; dup_rows: string }>(DUPLICATE_COUNTS_SQL)).rows[0]!;
  const dupKeys = Number(r.dup_keys);
  const invalid = byKind.invalid ?? 0;
  counts.members = rows - nulls - Number(r.dup_rows) + dupKeys;
  counts.new = byKind.new ?? 0;
  counts.changed = byKind.changed ?? 0;
  counts.exited = byKind.exited ?? 0;
  counts.unchanged = counts.members - counts.new - counts.changed - invalid - dupKeys;
  counts.failed = invalid + dupKeys + nulls;
  counts.valueChanges = kinds.rows.reduce((n, k) => n + Number(k.alters), 0);
  counts.unverified = kinds.rows.reduce((n, k) => n + Number(k.unverified), 0);

  await countPlannedAttributes(conn, member.attributes.map((a) => a.name), counts);
  const failed = await conn.query<{ member_key: string; reason: string }>(UNSENDABLE_SQL);
  const failures: MemberFailure[] = failed.rows.map((f) => ({ memberKey: f.member_key, reason: f.reason }));
  if (nulls > 0) failures.push({ memberKey: null, reason: `${nulls} row(s) with a NULL or empty ${identifier} were skipped` });
  return { counts, failures, sendable };
}

/** Adds the data points the planned payloads carry, per attribute and in total, to `counts` (plan and retire). */
export async function countPlannedAttributes(conn: Connection, columns: readonly string[], counts: AudienceCounts): Promise<void> {
  for (const p of (await conn.query<{ k: string; n: string }>(perAttributeSql(columns))).rows) {
    counts.plannedPerAttribute[p.k] = Number(p.n);
    counts.plannedUpdates += Number(p.n);
  }
}

/**
 * A PostgreSQL error in the audience query, pointed at the file's line, without the values it
 * may quote (`invalid input syntax for type integer: "ann@example.com"`): errors reach logs,
 * the run history and the notify webhook, and people's data must not.
 */
function queryError(error: unknown, audience: Audience, prefixLength: number): unknown {
  if (!(error instanceof DatabaseError)) return error;
  let line: number | undefined;
  let detail = withoutValues(error.message, error.code);
  if (error.position !== undefined) {
    const offset = error.position - 1 - prefixLength;
    if (offset >= 0 && offset <= audience.sql.length) {
      line = audience.sqlLine + (audience.sql.slice(0, offset).match(/\n/g)?.length ?? 0);
      if (audience.sql[offset] === ';') detail = 'more than one statement: an audience file holds exactly one SELECT';
    }
  }
  if (error.code === '25006') detail = `the query tries to write (${error.message}); audience queries run read-only`;
  if (error.code === '57014') detail = `the query was cancelled: it ran longer than --statement-timeout (or an administrator cancelled it)`;
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
