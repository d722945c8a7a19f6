/**
 * `verify` for one audience: read the members' profiles back from Braze (export-client.ts),
 * compare each with the snapshot (compare-profile.ts) and record what was found: members
 * checked, drifted, missing from Braze, per attribute the changed, missing and unexpected
 * values, and a few member keys (never values). Members sent under @update_existing_only true
 * whose profile is not known to exist are always checked: one found with nothing drifted is
 * confirmed (no longer resent every run). With `repair`, drifted members are marked in the
 * snapshot so the next sync resends exactly their drifted attributes.
 *
 * A full check (`all`) walks every member in key order and records when each was verified, so
 * an interrupted one resumes with the members not verified since it started.
 */
import type { Database } from '../db/pool.js';
import { escapeIdentifier } from '../db/pool.js';
import type { Logger } from '../log.js';
import { InterruptedError, exitCodeFor, messageOf, outcomeOfError, type ExitCode, type Outcome } from '../errors.js';
import { EXPORT_BATCH, isBatchable, type ExportClient } from '../braze/export-client.js';
import { STANDARD_FIELDS } from '../braze/standard-fields.js';
import { finishRun, startRun } from '../run/run-store.js';
import { releaseAudienceLock, tryAudienceLock } from '../run/run-lock.js';
import { finishFullVerify, recordVerification, startFullVerify, type AudienceRecord, type VerifiedMember } from '../audience/snapshot-store.js';
import type { IdentifierKind } from '../types.js';
import { compareProfile, type DriftKind } from './compare-profile.js';

export interface VerifyDeps {
  db: Database;
  schema: string;
  log: Logger;
  client: ExportClient;
  stop?: AbortSignal;
  /** Requests per minute the export client may make (for the time estimate). */
  exportRatePerMinute: number;
  onProgress?: (p: { audience: string; done: number; total: number }) => void;
}

export interface VerifyOptions {
  /** Members to check, picked at random (unverified members come on top). */
  sample?: number;
  /** Every member, resumable. */
  all?: boolean;
  /** Mark drifted members so the next sync resends exactly what drifted. */
  repair?: boolean;
  /** Record nothing: show what would be resent. */
  dryRun?: boolean;
  args?: object;
}

export interface VerifyCounts {
  checked: number;
  drifted: number;
  /** Members whose profile Braze does not have (update-only members waiting excluded). */
  missingProfiles: number;
  perAttribute: Record<string, Record<DriftKind, number>>;
  /** Update-only members whose profile was found now. */
  confirmed: number;
  /** Update-only members whose profile still does not exist. */
  waiting: number;
  /** Members marked so the next sync resends their drifted attributes. */
  repaired: number;
  requests: number;
  retries: number;
  rateLimited: number;
}

export interface VerifyResult {
  audience: string;
  status: Outcome;
  exitCode: ExitCode;
  counts: VerifyCounts;
  /** A few drifted member keys (never values). */
  examples: string[];
  runId?: number;
  error?: string;
  /** The whole audience was checked (a full check finished). */
  complete: boolean;
}

interface Row {
  identifier: IdentifierKind;
  member_key: string;
  attrs: Record<string, unknown>;
  unverified: boolean;
}

export function emptyVerifyCounts(): VerifyCounts {
  return { checked: 0, drifted: 0, missingProfiles: 0, perAttribute: {}, confirmed: 0, waiting: 0, repaired: 0, requests: 0, retries: 0, rateLimited: 0 };
}

export async function verifyAudience(deps: VerifyDeps, audience: AudienceRecord, options: VerifyOptions): Promise<VerifyResult> {
  const log = deps.log.child({ audience: audience.name });
  const counts = emptyVerifyCounts();
  const examples: string[] = [];
  const before = { ...deps.client.stats };
  const recording = !options.dryRun;
  const s = escapeIdentifier(deps.schema);
  const result = (status: Outcome, r: Partial<VerifyResult> = {}): VerifyResult => {
    counts.requests = deps.client.stats.requests - before.requests;
    counts.retries = deps.client.stats.retries - before.retries;
    counts.rateLimited = deps.client.stats.rateLimited - before.rateLimited;
    return { audience: audience.name, status, exitCode: exitCodeFor(status), counts, examples, complete: false, ...r };
  };

  return deps.db.withConnection(async (conn) => {
    // Verify rewrites snapshot rows: a sync of the audience must not move them at the same time.
    if (recording) {
      const lock = await tryAudienceLock(conn, deps.schema, audience.name);
      if (!lock.ok) return result('locked', { error: `audience ${audience.name} is being synced by another run; verify checked nothing` });
    }
    let runId: number | undefined;
    try {
      if (recording) runId = await startRun(conn, deps.schema, { job: 'verify', audience: audience.name, args: options.args ?? {} });
      const since = options.all && recording ? await startFullVerify(conn, deps.schema, audience.name) : undefined;
      // Unverified members first, always; then the sample at random, or every member not verified since the full check began.
      const where = options.all
        ? `present AND (verified_at IS NULL OR verified_at < $2::timestamptz OR $2 IS NULL)`
        : `present AND NOT unverified`;
      const text = options.all
        ? `SELECT identifier, member_key, attrs, unverified FROM ${s}.snapshots WHERE audience = $1 AND ${where} ORDER BY unverified DESC, identifier, member_key`
        : `(SELECT identifier, member_key, attrs, unverified FROM ${s}.snapshots WHERE audience = $1 AND present AND unverified ORDER BY member_key)
           UNION ALL (SELECT identifier, member_key, attrs, unverified FROM ${s}.snapshots WHERE audience = $1 AND ${where} ORDER BY random() LIMIT $2)`;
      const values = options.all ? [audience.name, since ?? null] : [audience.name, options.sample ?? 0];
      const { rows: sizes } = await conn.query<{ n: string; single: string }>(
        `SELECT count(*) AS n, count(*) FILTER (WHERE identifier NOT IN ('external_id', 'user_alias')) AS single FROM (${text}) AS m`,
        values,
      );
      const total = Number(sizes[0]!.n);
      const single = Number(sizes[0]!.single);
      const requests = Math.ceil((total - single) / EXPORT_BATCH) + single;
      log.info(`checking ${total} member(s) in about ${requests} request(s), ${estimate(requests, deps.exportRatePerMinute)} at ${deps.exportRatePerMinute}/min`, {
        oneByOne: single > 0 ? `${single} email/phone/braze_id member(s) are looked up one per request` : undefined,
      });

      const fields = ['external_id', 'user_aliases', 'braze_id', 'email', 'phone', 'custom_attributes', ...audience.attributes.filter((a) => STANDARD_FIELDS.has(a))];
      const handle = async (chunk: Row[]) => {
        const kind = chunk[0]!.identifier;
        const found = await deps.client.export(kind, chunk.map((r) => r.member_key), [...new Set(fields)]);
        const verified: VerifiedMember[] = [];
        for (const r of chunk) {
          counts.checked++;
          const user = found.get(r.member_key);
          const update = { identifier: r.identifier, memberKey: r.member_key, confirmed: false, unverified: r.unverified };
          if (!user) {
            if (r.unverified) {
              counts.waiting++; // expected: Braze ignored it; it is resent each run until the profile exists
              verified.push(update);
              continue;
            }
            counts.missingProfiles++;
            counts.drifted++;
            if (examples.length < 5) examples.push(r.member_key);
            // Repair: forget everything, so the next sync sends the full set again.
            verified.push({ ...update, unverified: audience.settings.updateExistingOnly === true, repair: options.repair ? { remove: Object.keys(r.attrs), set: {} } : undefined });
            continue;
          }
          const drift = compareProfile(r.attrs, user, audience.attributes, audience.identifier);
          if (drift.length === 0) {
            if (r.unverified) counts.confirmed++;
            verified.push({ ...update, confirmed: true });
            continue;
          }
          counts.drifted++;
          if (examples.length < 5) examples.push(r.member_key);
          for (const d of drift) {
            const a = (counts.perAttribute[d.attribute] ??= { changed: 0, missing: 0, unexpected: 0 });
            a[d.kind]++;
          }
          if (options.repair) {
            const set: Record<string, unknown> = {};
            for (const d of drift) if (d.kind !== 'missing') set[d.attribute] = d.braze;
            if (r.unverified) counts.confirmed++;
            verified.push({ ...update, confirmed: true, repair: { remove: drift.filter((d) => d.kind === 'missing').map((d) => d.attribute), set } });
          } else {
            // An unverified member stays so: it is resent in full next run, which repairs it anyway.
            verified.push(update);
          }
        }
        if (recording) {
          await recordVerification(deps.db, deps.schema, audience.name, verified, options.all === true);
          counts.repaired += verified.filter((v) => v.repair).length;
        }
        deps.onProgress?.({ audience: audience.name, done: counts.checked, total });
      };

      let stopped = false;
      const pending = new Map<IdentifierKind, Row[]>();
      outer: for await (const rows of conn.cursor<Row>(text, values, 500)) {
        for (const row of rows) {
          const list = pending.get(row.identifier) ?? [];
          list.push(row);
          pending.set(row.identifier, list);
          if (list.length >= (isBatchable(row.identifier) ? EXPORT_BATCH : 1)) {
            if (deps.stop?.aborted) {
              stopped = true;
              break outer;
            }
            pending.delete(row.identifier);
            await handle(list);
          }
        }
      }
      for (const list of pending.values()) {
        if (stopped || deps.stop?.aborted) {
          stopped = true;
          break;
        }
        for (let i = 0; i < list.length; i += isBatchable(list[0]!.identifier) ? EXPORT_BATCH : 1) {
          await handle(list.slice(i, i + (isBatchable(list[0]!.identifier) ? EXPORT_BATCH : 1)));
        }
      }
      const complete = !stopped;
      if (options.all && recording && complete) await finishFullVerify(conn, deps.schema, audience.name);
      const status: Outcome = stopped ? 'interrupted' : counts.drifted > 0 ? 'partial' : 'succeeded';
      const error = stopped ? 'stopped by a signal; verify --all resumes with the members not yet checked' : undefined;
      const r = result(status, { runId, error, complete });
      if (runId) await finishRun(conn, deps.schema, runId, { status, counts: { ...r.counts, examples }, error });
      log.info('verified', { checked: counts.checked, drifted: counts.drifted, missingProfiles: counts.missingProfiles, confirmed: counts.confirmed, waiting: counts.waiting, examples: examples.join(', ') || undefined });
      return r;
    } catch (error) {
      const e = error;
      const status: Outcome = e instanceof InterruptedError ? 'interrupted' : outcomeOfError(e);
      const r = result(status, { runId, error: messageOf(e) });
      if (runId) await finishRun(conn, deps.schema, runId, { status, counts: r.counts, error: messageOf(e) }).catch(() => {});
      log.error(messageOf(e));
      return r;
    } finally {
      if (recording) await releaseAudienceLock(conn, deps.schema, audience.name);
    }
  });
}

/** "under a minute", "about 12 min". */
function estimate(requests: number, perMinute: number): string {
  const minutes = requests / perMinute;
  return minutes < 1 ? 'under a minute' : `about ${Math.ceil(minutes)} min`;
}
