/**
 * One audience, one run: execute its query once into a temporary table, compare it with the
 * snapshot in SQL, then stream only the deltas through a cursor into batched /users/track
 * requests. The snapshot advances per batch, only for the members Braze accepted, so a run
 * killed at any moment is resumed by the next one sending exactly what was not confirmed.
 */
import type { Writable } from 'node:stream';
import { AbortError, AppError, AudienceError, BrazeHttpError, DatabaseError, ExitCode, messageOf, type RunStatus } from '../errors.js';
import { lockKey } from '../db/locks.js';
import { escapeIdentifier, type Connection, type Database } from '../db/pool.js';
import { abandonStaleRuns, finishRun, recordFailures, startRun, type MemberFailure } from '../run/run-store.js';
import type { Logger } from '../log.js';
import type { TrackClient } from '../braze/track-client.js';
import { emptyCounts, type Audience, type AudienceCounts, type IdentifierKind } from '../types.js';
import { advanceSnapshot } from './snapshot-store.js';
import { createDispatcher } from '../run/dispatcher.js';
import { buildMemberSql, resolveTypes, type MemberSql } from './member-sql.js';

export type SyncMode = 'sync' | 'backfill' | 'plan';

export interface SyncDeps {
  db: Database;
  schema: string;
  log: Logger;
  /** Absent when planning: nothing is sent. */
  client?: TrackClient;
  clock?: () => number;
  /** Aborted on SIGTERM/SIGINT: no new batch starts; in-flight ones finish and are recorded. */
  stop?: AbortSignal;
  /** After each batch: members confirmed or failed so far, of those to send. */
  onProgress?: (p: { audience: string; done: number; total: number }) => void;
}

export interface SyncOptions {
  mode: SyncMode;
  batchSize: number;
  concurrency: number;
  maxChangeRatio: number;
  force: boolean;
  /** When planning: where to write the exact request bodies, one JSON object per line. */
  out?: Writable;
  /** Recorded in the run history (never secrets). */
  args?: object;
}

export interface AudienceResult {
  audience: string;
  file: string;
  status: 'succeeded' | 'partial' | 'aborted' | 'failed' | 'locked' | 'planned' | 'interrupted';
  exitCode: ExitCode;
  counts: AudienceCounts;
  durationMs: number;
  runId?: number;
  error?: string;
  /** True when the failure would repeat for every audience (bad key, wrong endpoint). */
  fatal?: boolean;
  /** Share of existing members that change or exit, and whether that trips the guardrail. */
  guardrail?: { ratio: number; limit: number; tripped: boolean };
}

interface DeltaRow {
  identifier: IdentifierKind;
  member_key: string;
  kind: 'new' | 'changed' | 'exited' | 'unchanged';
  /** The attributes to send, as JSON text straight from PostgreSQL (never re-serialised). */
  payload: string;
  /** The attribute names in `payload`, separated by U+001F, for the per-attribute counts. */
  keys: string;
  new_attrs: string | null;
  row_hash: string | null;
}

export async function syncAudience(deps: SyncDeps, audience: Audience, options: SyncOptions): Promise<AudienceResult> {
  const clock = deps.clock ?? Date.now;
  const started = clock();
  const log = deps.log.child({ audience: audience.name });
  const counts = emptyCounts();
  const result = (r: Partial<AudienceResult> & Pick<AudienceResult, 'status' | 'exitCode'>): AudienceResult => ({
    audience: audience.name,
    file: audience.file,
    counts,
    durationMs: clock() - started,
    ...r,
  });
  const planning = options.mode === 'plan';

  return deps.db.withConnection(async (conn) => {
    const key = lockKey(deps.schema, `audience:${audience.name}`);
    if (!planning) {
      const { rows } = await conn.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1, 1) AS ok', [key]);
      if (!rows[0]!.ok) {
        const holder = await conn.query<{ pid: number }>(`SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = ($1::bigint & 4294967295)::oid AND objid = 1 LIMIT 1`, [key]);
        const who = holder.rows[0] ? ` (PostgreSQL backend pid ${holder.rows[0].pid})` : '';
        const error = `audience ${audience.name} is being synced by another run${who}; this run sent nothing`;
        log.warn(error);
        return result({ status: 'locked', exitCode: ExitCode.locked, error });
      }
    }
    let runId: number | undefined;
    try {
      // Joins and aggregates over a million members spill to disk at the 4 MB default.
      await conn.query(`SET work_mem = '256MB'`);
      if (!planning) {
        const abandoned = await abandonStaleRuns(conn, deps.schema, options.mode, audience.name);
        if (abandoned > 0) log.warn('an earlier run stopped without finishing; this run sends what it left unconfirmed', { abandoned });
      }
      const columns = await describe(deps.db, audience);
      const types = await resolveTypes(conn, columns.map((c) => c.typeOid));
      // Expressions over the materialised row `c`; validated here, before anything runs.
      const member = buildMemberSql(audience, columns, types, 'h');
      if (!planning) {
        runId = await startRun(conn, deps.schema, { job: options.mode, audience: audience.name, args: options.args ?? {} });
        await conn.query(
          `INSERT INTO ${escapeIdentifier(deps.schema)}.audiences (name, file, identifier, settings, schedule, updated_at) VALUES ($1, $2, $3, $4, $5, now())
           ON CONFLICT (name) DO UPDATE SET file = excluded.file, identifier = excluded.identifier, settings = excluded.settings, schedule = excluded.schedule, updated_at = now()`,
          [audience.name, audience.file, member.identifier, JSON.stringify({ onExit: audience.onExit, updateExistingOnly: audience.updateExistingOnly, timezone: audience.timezone }), audience.schedule ?? null],
        );
      }
      const runLog = runId ? log.child({ run: runId }) : log;

      await materialiseCurrent(conn, audience, buildMemberSql(audience, columns, types, 'q'));
      const snapshotTable = await snapshotSource(conn, deps.schema, planning);
      await computeDeltas(conn, snapshotTable, audience, member, options.mode === 'backfill');

      const plan = await summarise(conn, snapshotTable, audience.name, member.identifier);
      const failures = plan.failures;
      Object.assign(counts, plan.counts);
      const guardrail = {
        ratio: plan.existing === 0 ? 0 : (plan.counts.changed + plan.counts.exited) / plan.existing,
        limit: options.maxChangeRatio,
        tripped: false,
      };
      guardrail.tripped = plan.existing > 0 && guardrail.ratio > options.maxChangeRatio && !options.force;
      runLog.info('planned', { new: counts.new, changed: counts.changed, exited: counts.exited, unchanged: counts.unchanged, failed: counts.failed, updates: counts.updates });

      if (planning) {
        if (options.out) await writeBodies(conn, audience, options);
        return result({ status: 'planned', exitCode: ExitCode.ok, guardrail });
      }
      if (runId) await recordFailures(conn, deps.schema, runId, audience.name, failures);
      if (guardrail.tripped) {
        throw new AbortError(
          `${audience.name}: this run would change or remove ${(guardrail.ratio * 100).toFixed(1)}% of ${plan.existing} existing members, over --max-change-ratio ${options.maxChangeRatio}; nothing was sent. Check the query, then rerun with --force if the change is intended`,
        );
      }
      if (!deps.client) throw new AppError('internal: no Braze client for a sync');

      if (deps.stop?.aborted) {
        if (runId) await finishRun(conn, deps.schema, runId, { status: 'interrupted', counts, error: 'stopped by a signal before sending' });
        return result({ status: 'interrupted', exitCode: ExitCode.aborted, runId, guardrail, error: 'stopped by a signal before sending' });
      }
      // Members whose change needs no request: recorded now, no proof to wait for.
      await applyWithoutSending(conn, deps.schema, audience.name, runId ?? null);
      const sent = await deliver(conn, deps, audience, options, runId ?? null, counts, plan.sendable, runLog);
      counts.requests = deps.client.stats.requests - sent.requestsBefore;
      counts.retries = deps.client.stats.retries - sent.retriesBefore;
      counts.rateLimited = deps.client.stats.rateLimited - sent.rateLimitedBefore;

      const status: RunStatus = sent.abort ? 'aborted' : sent.stopped ? 'interrupted' : counts.failed > 0 ? 'partial' : 'succeeded';
      if (runId) await finishRun(conn, deps.schema, runId, { status, counts, error: sent.abort ? messageOf(sent.abort) : undefined });
      runLog.info('finished', { status, updates: counts.updates, failed: counts.failed, requests: counts.requests });
      if (sent.abort) {
        runLog.error(messageOf(sent.abort));
        return result({ status: 'aborted', exitCode: ExitCode.aborted, runId, error: messageOf(sent.abort), fatal: isFatal(sent.abort), guardrail });
      }
      if (status === 'interrupted') return result({ status, exitCode: ExitCode.aborted, runId, guardrail, error: 'stopped by a signal; unconfirmed members are sent next run' });
      return result({ status, exitCode: status === 'partial' ? ExitCode.partial : ExitCode.ok, runId, guardrail });
    } catch (error) {
      const e = asAudienceError(error, audience);
      const status: RunStatus = e instanceof AudienceError ? 'failed' : 'aborted';
      if (runId) await finishRun(conn, deps.schema, runId, { status, counts, error: messageOf(e) }).catch(() => {});
      log.error(messageOf(e));
      return result({ status, exitCode: e instanceof AppError ? e.exitCode : ExitCode.aborted, runId, error: messageOf(e), fatal: isFatal(e) });
    } finally {
      await conn.query(DROP_TEMP).catch(() => {});
      await conn.query('RESET work_mem').catch(() => {});
      if (!planning) await conn.query('SELECT pg_advisory_unlock($1, 1)', [key]).catch(() => {});
    }
  });
}

const DESCRIBE_PREFIX = 'SELECT * FROM (\n';

async function describe(db: Database, audience: Audience) {
  try {
    return await db.describe(`${DESCRIBE_PREFIX}${audience.sql}\n) AS q LIMIT 0`);
  } catch (error) {
    throw queryError(error, audience, DESCRIBE_PREFIX.length);
  }
}

const DROP_TEMP = 'DROP TABLE IF EXISTS pg_temp.bb_current, pg_temp.bb_cand, pg_temp.bb_dups, pg_temp.bb_delta';

/**
 * Run the audience query once, read-only, into pg_temp.bb_current: the key, a hash of the
 * row's attribute values (seeded with the column signature), and the row's own columns. JSON
 * is built later, and only for rows whose hash differs from the snapshot's.
 */
async function materialiseCurrent(conn: Connection, audience: Audience, member: MemberSql): Promise<void> {
  await conn.query(DROP_TEMP);
  const version = Number((await conn.query<{ v: string }>('SELECT current_setting($1) AS v', ['server_version_num'])).rows[0]!.v);
  // WITH NO DATA plans the query to get its column types but does not run it.
  await conn.query(`CREATE TEMP TABLE bb_current AS SELECT NULL::text AS "__bb_key", NULL::bigint AS "__bb_hash", q.* FROM (\n${audience.sql}\n) AS q WITH NO DATA`);
  const prefix = `INSERT INTO pg_temp.bb_current SELECT ${member.key}, ${member.rowHash(version)}, q.* FROM (\n`;
  // READ ONLY: an audience file cannot change the warehouse, even through a function it calls.
  await conn.query('BEGIN READ ONLY');
  try {
    // Exact float text in the row hash on every server version (lossy text could hide a change).
    await conn.query('SET LOCAL extra_float_digits = 3');
    await conn.query(`${prefix}${audience.sql}\n) AS q`, [member.signature]);
    await conn.query('COMMIT');
  } catch (error) {
    await conn.query('ROLLBACK').catch(() => {});
    throw queryError(error, audience, prefix.length);
  }
}

/** The snapshot table, or an empty stand-in when planning against a database never synced. */
async function snapshotSource(conn: Connection, schema: string, planning: boolean): Promise<string> {
  const table = `${escapeIdentifier(schema)}.snapshots`;
  if (!planning) return table;
  const { rows } = await conn.query<{ t: string | null }>('SELECT to_regclass($1)::text AS t', [table]);
  return rows[0]!.t ? table : `(SELECT NULL::text AS audience, NULL::text AS identifier, NULL::text AS member_key, NULL::jsonb AS attrs, NULL::bigint AS row_hash WHERE false)`;
}

/**
 * The delta per member and the exact payload to send, in SQL. Rows whose hash matches the
 * snapshot are unchanged and skipped; for the others the attributes are built and compared
 * value by value: new members get every non-NULL attribute, changed members only the
 * attributes whose value differs (NULL is sent as null), exited members their @on_exit, and
 * with backfill every member gets its full set.
 */
async function computeDeltas(conn: Connection, snapshots: string, audience: Audience, member: MemberSql, backfill: boolean): Promise<void> {
  // 1. Candidates: rows whose hash differs from the snapshot's, and snapshot members gone from
  //    the result. Reads the snapshot's (key, hash) only.
  await conn.query(
    `CREATE TEMP TABLE bb_cand AS
     SELECT c.*, s.identifier AS "__bb_s_ident", s.member_key AS "__bb_s_key"
       FROM (SELECT $2::text AS "__bb_ident", * FROM pg_temp.bb_current WHERE "__bb_key" IS NOT NULL) AS c
       FULL JOIN (SELECT identifier, member_key, row_hash FROM ${snapshots} AS sn WHERE sn.audience = $1) AS s
         ON s.identifier = c."__bb_ident" AND s.member_key = c."__bb_key"
      WHERE $3 OR c."__bb_hash" IS DISTINCT FROM s.row_hash`,
    [audience.name, member.identifier, backfill],
  );
  // 2. Two rows for one member: we cannot know which is right, so neither is sent. Only keys
  //    that would change anything can matter, so only those are counted; identical copies of
  //    an unchanged member change nothing.
  await conn.query(
    `CREATE TEMP TABLE bb_dups AS
     SELECT "__bb_key" AS member_key, count(*) AS n FROM pg_temp.bb_current
      WHERE "__bb_key" IN (SELECT "__bb_key" FROM pg_temp.bb_cand) GROUP BY 1 HAVING count(*) > 1`,
  );
  // 3. For candidates only: the Braze JSON, the validation, the comparison and the payload.
  //    New members get every non-NULL attribute; changed members only the attributes whose
  //    value differs (NULL is sent as null); exited members their @on_exit; with backfill,
  //    every member its full set.
  const nullsFor = (attrs: string, where = 'true') => `(SELECT jsonb_object_agg(k, 'null'::jsonb) FROM jsonb_object_keys(${attrs}) AS k WHERE ${where})`;
  await conn.query(
    `CREATE TEMP TABLE bb_delta AS
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
    [audience.name, backfill, audience.onExit.kind, audience.onExit.kind === 'set' ? JSON.stringify(audience.onExit.values) : null],
  );
}

async function summarise(conn: Connection, snapshots: string, name: string, identifier: IdentifierKind) {
  const counts = emptyCounts();
  const kinds = await conn.query<{ kind: string; n: string; sendable: string }>(
    `SELECT kind, count(*) AS n, count(*) FILTER (WHERE kind <> 'invalid' AND payload IS NOT NULL AND payload <> '{}'::jsonb) AS sendable
       FROM pg_temp.bb_delta GROUP BY kind`,
  );
  const byKind = Object.fromEntries(kinds.rows.map((k) => [k.kind, Number(k.n)])) as Record<string, number | undefined>;
  /** Members a sync sends a request for (exits that send nothing and empty payloads excluded). */
  const sendable = kinds.rows.reduce((n, k) => n + Number(k.sendable), 0);
  const rows = await conn.query<{ nulls: string; keyed: string; dup_keys: string; dup_rows: string }>(
    `SELECT (SELECT count(*) FROM pg_temp.bb_current WHERE "__bb_key" IS NULL) AS nulls,
            (SELECT count(*) FROM pg_temp.bb_current WHERE "__bb_key" IS NOT NULL) AS keyed,
            (SELECT count(*) FROM pg_temp.bb_dups) AS dup_keys, (SELECT coalesce(sum(n), 0) FROM pg_temp.bb_dups) AS dup_rows`,
  );
  const r = rows.rows[0]!;
  const [nulls, dupKeys] = [Number(r.nulls), Number(r.dup_keys)];
  const invalid = byKind.invalid ?? 0;
  counts.members = Number(r.keyed) - Number(r.dup_rows) + dupKeys;
  counts.new = byKind.new ?? 0;
  counts.changed = byKind.changed ?? 0;
  counts.exited = byKind.exited ?? 0;
  counts.unchanged = counts.members - counts.new - counts.changed - invalid - dupKeys;
  counts.failed = invalid + dupKeys + nulls;

  const per = await conn.query<{ k: string; n: string }>(
    `SELECT k, count(*) AS n FROM pg_temp.bb_delta, jsonb_object_keys(payload) AS k WHERE payload IS NOT NULL GROUP BY k ORDER BY k`,
  );
  for (const p of per.rows) {
    counts.perAttribute[p.k] = Number(p.n);
    counts.updates += Number(p.n);
  }
  const failed = await conn.query<{ member_key: string; reason: string }>(
    `SELECT member_key, reason FROM (
       SELECT DISTINCT ON (member_key) member_key, invalid AS reason FROM pg_temp.bb_delta WHERE kind = 'invalid' ORDER BY member_key
     ) AS i
     UNION ALL SELECT member_key, 'identifier appears in ' || n || ' rows of the result' FROM pg_temp.bb_dups`,
  );
  const failures: MemberFailure[] = failed.rows.map((f) => ({ memberKey: f.member_key, reason: f.reason }));
  if (nulls > 0) failures.push({ memberKey: null, reason: `${nulls} row(s) with a NULL or empty ${identifier} were skipped` });
  const existing = await conn.query<{ n: string }>(`SELECT count(*) AS n FROM ${snapshots} AS sn WHERE sn.audience = $1`, [name]);
  return { counts, failures, sendable, existing: Number(existing.rows[0]!.n) };
}

/**
 * What needs no request, in one statement: exits that send nothing (keep, or nothing to
 * unset), members with no attributes, and rows whose hash changed but whose values did not.
 */
async function applyWithoutSending(conn: Connection, schema: string, audience: string, runId: number | null): Promise<void> {
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

const SEND_QUERY = `SELECT identifier, member_key, kind, payload::text AS payload, array_to_string(ARRAY(SELECT jsonb_object_keys(payload)), E'\\x1f') AS keys,
       new_attrs::text AS new_attrs, row_hash::text AS row_hash
  FROM pg_temp.bb_delta WHERE kind <> 'invalid' AND payload IS NOT NULL AND payload <> '{}'::jsonb`;

/**
 * The attribute object for one member, as JSON text: identifier, the update-existing flag,
 * then the payload exactly as PostgreSQL wrote it. Parsing and re-serialising it in
 * JavaScript would cost more than the request itself and could alter numbers.
 */
export function attributeJson(audience: Audience, row: Pick<DeltaRow, 'identifier' | 'member_key' | 'payload'>): string {
  let identity: string;
  if (row.identifier === 'user_alias') {
    const [alias_name, alias_label] = JSON.parse(row.member_key) as [string, string];
    identity = `"user_alias":${JSON.stringify({ alias_name, alias_label })}`;
  } else {
    identity = `${JSON.stringify(row.identifier)}:${JSON.stringify(row.member_key)}`;
  }
  // payload is a non-empty JSON object: '{"a": 1, ...}'.
  return `{${identity},"_update_existing_only":${audience.updateExistingOnly},${row.payload.slice(1)}`;
}

async function* batches(conn: Connection, size: number): AsyncGenerator<DeltaRow[]> {
  let batch: DeltaRow[] = [];
  for await (const rows of conn.cursor<DeltaRow>(SEND_QUERY, [], Math.max(size, 500))) {
    for (const row of rows) {
      batch.push(row);
      if (batch.length === size) {
        yield batch;
        batch = [];
      }
    }
  }
  if (batch.length > 0) yield batch;
}

async function writeBodies(conn: Connection, audience: Audience, options: SyncOptions): Promise<void> {
  const out = options.out!;
  for await (const batch of batches(conn, options.batchSize)) {
    const line = `{"attributes":[${batch.map((r) => attributeJson(audience, r)).join(',')}]}\n`;
    if (!out.write(line)) await new Promise((resolve) => out.once('drain', resolve));
  }
}

/**
 * Send the deltas in batches, at most `concurrency` requests in flight and at most that many
 * batches read ahead, so memory stays bounded whatever the audience size. Each member is in
 * exactly one batch, so it is never in two in-flight requests.
 */
async function deliver(conn: Connection, deps: SyncDeps, audience: Audience, options: SyncOptions, runId: number | null, counts: AudienceCounts, total: number, log: Logger) {
  const client = deps.client!;
  const before = { requestsBefore: client.stats.requests, retriesBefore: client.stats.retries, rateLimitedBefore: client.stats.rateLimited };
  const dispatcher = createDispatcher(options.concurrency);
  const sentPerAttribute: Record<string, number> = {};
  let updates = 0;
  let done = 0;

  const sendBatch = async (batch: DeltaRow[]) => {
    if (dispatcher.error) return;
    const { failed } = await client.track(batch.map((r) => attributeJson(audience, r)));
    const confirmed = batch.filter((_, i) => !failed.has(i));
    const failures = [...failed].map(([i, reason]) => ({ memberKey: batch[i]!.member_key, reason }));
    const advanced = confirmed.map((r) => ({ identifier: r.identifier, memberKey: r.member_key, attrs: r.kind === 'exited' ? null : r.new_attrs, rowHash: r.row_hash }));
    if (failures.length === 0 && advanced.every((m) => m.attrs !== null)) {
      // The common case is one statement: autocommit saves two round trips per batch.
      await advanceSnapshot(deps.db, deps.schema, audience.name, runId, advanced);
    } else {
      // Snapshot and failures in one transaction: both say what Braze just answered.
      await deps.db.withTransaction(async (tx) => {
        await advanceSnapshot(tx, deps.schema, audience.name, runId, advanced);
        if (runId) await recordFailures(tx, deps.schema, runId, audience.name, failures);
      });
    }
    counts.failed += failures.length;
    for (const r of confirmed) {
      for (const k of r.keys.split('\x1f')) {
        sentPerAttribute[k] = (sentPerAttribute[k] ?? 0) + 1;
        updates++;
      }
    }
    if (failures.length > 0) log.warn('Braze rejected members of a batch', { rejected: failures.length, reason: failures[0]!.reason });
    done += batch.length;
    deps.onProgress?.({ audience: audience.name, done, total });
  };

  try {
    for await (const batch of batches(conn, options.batchSize)) {
      if (dispatcher.error || deps.stop?.aborted) break;
      await dispatcher.submit(() => sendBatch(batch));
    }
  } finally {
    await dispatcher.drain();
  }
  counts.updates = updates;
  counts.perAttribute = sentPerAttribute;
  return { ...before, abort: dispatcher.error, stopped: Boolean(deps.stop?.aborted) };
}

/** Failures that would repeat for every audience: stop the whole run. */
function isFatal(error: unknown): boolean {
  return error instanceof BrazeHttpError && (error.status === 401 || error.status === 403 || error.status === 404 || error.status === 400);
}

/**
 * PostgreSQL errors while the audience's rows are turned into attributes are the audience's
 * (bad values, a query that no longer plans): exit 2. Anything else (a lost connection, a
 * deadlock, a full disk) is not the file's fault and keeps its own class: exit 4.
 */
function asAudienceError(error: unknown, audience: Audience): unknown {
  if (error instanceof DatabaseError && /^(22|42)/.test(error.code ?? '')) {
    return new AudienceError(audience.file, `query failed: ${error.message}`, undefined, { cause: error });
  }
  return error;
}

/** A PostgreSQL error in the audience query, pointed at the file's line. */
function queryError(error: unknown, audience: Audience, prefixLength: number): unknown {
  if (!(error instanceof DatabaseError)) return error;
  let line: number | undefined;
  let detail = error.message;
  if (error.position !== undefined) {
    const offset = error.position - 1 - prefixLength;
    if (offset >= 0 && offset <= audience.sql.length) {
      line = audience.sqlLine + (audience.sql.slice(0, offset).match(/\n/g)?.length ?? 0);
      if (audience.sql[offset] === ';') detail = 'more than one statement: an audience file holds exactly one SELECT';
    }
  }
  if (error.code === '25006') detail = `the query tries to write (${error.message}); audience queries run read-only`;
  return new AudienceError(audience.file, detail, line, { cause: error });
}
