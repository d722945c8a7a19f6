/**
 * Retiring an audience whose file is gone (deleted, renamed): every member it still holds in
 * Braze gets the audience's last @on_exit, with the usual delivery guarantees (exits advance
 * only on Braze's word; a stopped retire resumes where it stopped), and once every exit is
 * confirmed the audience is forgotten: its snapshot rows and its record.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Writable } from 'node:stream';
import type { TrackClient } from '../braze/track-client.js';
import type { Database } from '../db/pool.js';
import { ConfigError, exitCodeFor, messageOf, outcomeOfError, type Outcome } from '../errors.js';
import type { Logger } from '../log.js';
import { releaseAudienceLock, tryAudienceLock } from '../run/run-lock.js';
import { abandonStaleRuns, finishRun, startRun } from '../run/run-store.js';
import { emptyCounts, type Audience } from '../types.js';
import { deliverDeltas, writeBodies } from './deliver-deltas.js';
import type { MemberSql } from './member-sql.js';
import { deltaSql, duplicatesSql, retireCandidatesSql } from './plan-sql.js';
import { KIND_COUNTS_SQL } from './plan-counts-sql.js';
import { countPlannedAttributes, dropPlanTables } from './plan-deltas.js';
import { applyWithoutSending, forgetAudience, knownAudiences, snapshotSource } from './snapshot-store.js';
import type { AudienceResult } from './sync-audience.js';

export interface RetireDeps {
  db: Database;
  schema: string;
  log: Logger;
  /** Absent with dryRun. */
  client?: TrackClient;
  stop?: AbortSignal;
}

export interface RetireOptions {
  /** The audience folder: a file still there means the audience is not retired but live. */
  audiencesDir: string;
  dryRun: boolean;
  batchSize: number;
  concurrency: number;
  out?: Writable;
}

export async function retireAudience(deps: RetireDeps, name: string, options: RetireOptions): Promise<AudienceResult> {
  const started = Date.now();
  const counts = emptyCounts();
  const record = (await knownAudiences(deps.db, deps.schema)).find((a) => a.name === name);
  if (!record) throw new ConfigError([`audience ${name} is not known to state schema ${deps.schema}: nothing to retire (braze-bridge status lists the audiences)`]);
  // Its file, here or where it was last synced from (another folder sharing this state schema):
  // an audience whose file exists is live, not retired.
  for (const file of [join(options.audiencesDir, `${name}.sql`), record.file]) {
    if (existsSync(file)) throw new ConfigError([`${file} still exists: a retired audience would come back on the next sync. Delete or move the file first`]);
  }
  const audience: Audience = {
    name,
    file: record.file,
    sql: '',
    sqlLine: 0,
    onExit: record.settings.onExit ?? { kind: 'unset' },
    updateExistingOnly: record.settings.updateExistingOnly ?? (record.identifier === 'user_alias' || record.identifier === 'braze_id'),
  };
  const log = deps.log.child({ audience: name });
  const result = (status: Outcome, r: Partial<AudienceResult> = {}): AudienceResult => ({ audience: name, file: record.file, status, exitCode: exitCodeFor(status), counts, durationMs: Date.now() - started, ...r });

  return deps.db.withConnection(async (conn) => {
    if (!options.dryRun) {
      const lock = await tryAudienceLock(conn, deps.schema, name);
      if (!lock.ok) return result('locked', { error: `audience ${name} is being synced or retired by another run; this run sent nothing` });
    }
    let runId: number | undefined;
    try {
      if (!options.dryRun) {
        await abandonStaleRuns(conn, deps.schema, 'retire', name);
        runId = await startRun(conn, deps.schema, { job: 'retire', audience: name, args: { onExit: audience.onExit.kind } });
      }
      // No member is in the result any more: every member the snapshot holds as present exits.
      await dropPlanTables(conn);
      await conn.query(`CREATE TEMP TABLE bb_current ("__bb_key" text, "__bb_hash" bigint)`);
      const none: MemberSql = { identifier: record.identifier, key: 'NULL', attrs: 'NULL::text', present: 'NULL::text', invalid: 'NULL::text', attributes: [], signature: '', rowHash: () => 'NULL', rowsFrom: (source) => `${source} AS h` };
      const snapshots = await snapshotSource(conn, deps.schema, options.dryRun);
      // Every member, those who left earlier too: under unset they exit again, so whatever Braze
      // still holds of the audience's custom attributes is cleared before it is forgotten.
      const candidates = retireCandidatesSql(snapshots, audience, record.identifier);
      await conn.query(candidates.text, candidates.values);
      await conn.query(duplicatesSql(record.identifier));
      const delta = deltaSql(snapshots, audience, none, false, audience.onExit.kind === 'unset');
      await conn.query(delta.text, delta.values);
      const kinds = await conn.query<{ kind: string; n: string; sendable: string }>(KIND_COUNTS_SQL);
      counts.exited = kinds.rows.reduce((n, k) => n + (k.kind === 'exited' ? Number(k.n) : 0), 0);
      const sendable = kinds.rows.reduce((n, k) => n + Number(k.sendable), 0);
      await countPlannedAttributes(conn, [], counts);
      log.info('planned retirement', { exited: counts.exited, updates: counts.plannedUpdates });
      if (options.dryRun) {
        if (options.out) await writeBodies(conn, audience, options.batchSize, options.out);
        return result('planned');
      }
      const id = runId!;
      await applyWithoutSending(conn, deps.schema, name, id);
      const sent = await deliverDeltas(
        conn,
        { schema: deps.schema, client: deps.client!, log, runId: id, identifier: record.identifier, batchSize: options.batchSize, concurrency: options.concurrency, stop: deps.stop },
        audience,
        sendable,
      );
      Object.assign(counts, { updates: sent.updates, perAttribute: sent.perAttribute, requests: sent.requests, retries: sent.retries, rateLimited: sent.rateLimited, failed: sent.failed });
      const status: Outcome = sent.abort ? 'aborted' : sent.stopped ? 'interrupted' : sent.failed > 0 ? 'partial' : 'succeeded';
      // Forgotten only when Braze confirmed every exit; otherwise a second retire finishes the job.
      if (status === 'succeeded') await forgetAudience(conn, deps.schema, name);
      const error = sent.abort ? messageOf(sent.abort) : status === 'succeeded' ? undefined : 'not every exit was confirmed; run retire again to finish';
      await finishRun(conn, deps.schema, id, { status, counts, error });
      log.info('retired', { status, updates: counts.updates, forgotten: status === 'succeeded' });
      return result(status, { runId, error });
    } catch (error) {
      const status = outcomeOfError(error);
      if (runId) await finishRun(conn, deps.schema, runId, { status, counts, error: messageOf(error) }).catch(() => {});
      throw error;
    } finally {
      await dropPlanTables(conn).catch(() => {});
      if (!options.dryRun) await releaseAudienceLock(conn, deps.schema, name);
    }
  });
}
