/**
 * Plans one audience's run: runs its query once, read-only, into a temporary table, compares
 * it with the snapshot in SQL and leaves the deltas in pg_temp.bb_delta for delivery to stream.
 * Returns a typed Plan: the counts per kind, the members that cannot be sent and why, how many
 * members need a request, and the guardrail's verdict. Nothing here sends or records anything.
 */
import { AudienceError } from '../errors.js';
import type { Connection, Database, Queryable } from '../db/pool.js';
import type { MemberFailure } from '../run/run-store.js';
import { emptyCounts, type Audience, type AudienceCounts, type IdentifierKind } from '../types.js';
import { buildMemberSql, resolveTypes, type MemberSql } from './member-sql.js';
import { DESCRIBE_PREFIX, describeSql, DROP_PLAN_TABLES, deltaSql } from './plan-sql.js';
import { DUPLICATE_COUNTS_SQL, KIND_COUNTS_SQL, perAttributeSql, UNSENDABLE_SQL } from './plan-counts-sql.js';
import { compareCurrent, planFirstSync, queryError, type Column } from './run-query.js';
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
  /** Deltas that need no request (applyWithoutSending has something to record): exits with nothing to send, values unchanged. */
  quiet: number;
  /** Members the snapshot held before this run. */
  existing: number;
  /** The snapshot held no row of the audience (its first sync): every delta sent is a new member. */
  firstSync: boolean;
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
    throw queryError(error, audience, DESCRIBE_PREFIX);
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
  // Off for them, and for a first sync's query (built into one of them); a later run's
  // comparison runs with the server's setting. The caller resets it with the connection's other settings.
  await conn.query('SET jit = off');
  // Floats as their exact text in every row hash and payload, inside the query's transaction (a
  // first sync builds its JSON there) and outside it (later runs): lossy text could hide a change,
  // or, with a database or role at 0 or below, make every changed member resend its floats.
  // Reset by the caller too.
  await conn.query('SET extra_float_digits = 3');
  const snapshots = await snapshotSource(conn, schema, planning);
  const held = await countSnapshotMembers(conn, snapshots, audience.name);
  const filling = buildMemberSql(audience, columns, types, 'q', { maxArrayLength: options.maxArrayLength });
  const query = { statementTimeoutMs: options.statementTimeoutMs };
  // A first sync builds every member's delta as the query is read, in key order, so the
  // snapshot's index grows at one end instead of taking each key at a random place (a million
  // new rows: 5.3 s instead of 7.5 s, for a sort of 0.9 s); that statement is mostly the
  // planning expressions, so it runs without JIT too. Later runs compare the result with the
  // snapshot as they read it (with the server's JIT setting), store only what differs, sort
  // nothing, and then build the deltas of those.
  const first = held.rows === 0;
  if (!first) await conn.query('RESET jit');
  const { rows, nulls } = first
    ? await planFirstSync(conn, audience, filling, member, query)
    : await compareCurrent(conn, audience, columns, filling, snapshots, { ...query, backfillSince: backfill ? (options.backfillSince ?? new Date()) : undefined });
  await conn.query('SET jit = off');
  if (!first) {
    const delta = deltaSql(snapshots, audience, member, backfill);
    await conn.query(delta.text, delta.values);
  }

  const plan = await summarise(conn, member, rows, nulls);
  const existing = held.members;
  const attributes = [...member.attributes.map((a) => a.name), ...(audience.onExit.kind === 'set' ? Object.keys(audience.onExit.values) : [])];
  return { ...plan, identifier: member.identifier, existing, firstSync: first, attributes, columns: member.attributes.map((a) => a.name), guardrail: guardrailOf(plan.counts, existing, audience, attributes, options) };
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

async function summarise(conn: Connection, member: MemberSql, rows: number, nulls: number): Promise<Pick<Plan, 'counts' | 'failures' | 'sendable' | 'quiet'>> {
  const { identifier } = member;
  const counts = emptyCounts();
  const kinds = await conn.query<{ kind: string; n: string; sendable: string; alters: string; unverified: string }>(KIND_COUNTS_SQL);
  const byKind = Object.fromEntries(kinds.rows.map((k) => [k.kind, Number(k.n)])) as Record<string, number | undefined>;
  const sendable = kinds.rows.reduce((n, k) => n + Number(k.sendable), 0);
  const quiet = kinds.rows.reduce((n, k) => n + (k.kind === 'invalid' ? 0 : Number(k.n) - Number(k.sendable)), 0);
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
  return { counts, failures, sendable, quiet };
}

/** Adds the data points the planned payloads carry, per attribute and in total, to `counts` (plan and retire). */
export async function countPlannedAttributes(conn: Connection, columns: readonly string[], counts: AudienceCounts): Promise<void> {
  for (const p of (await conn.query<{ k: string; n: string }>(perAttributeSql(columns))).rows) {
    counts.plannedPerAttribute[p.k] = Number(p.n);
    counts.plannedUpdates += Number(p.n);
  }
}
