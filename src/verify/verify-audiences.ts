/**
 * `verify` over several audiences: a sample is split between them in proportion to their
 * members (stratified), each is verified in turn, and with --repair the audiences found to
 * have drifted are synced right after, so the drifted attributes are resent with the usual
 * delivery guarantees (batches confirmed one by one, data points counted).
 */
import { combineExitCodes, type ExitCode } from '../errors.js';
import { knownAudiences, countAudienceRows } from '../audience/snapshot-store.js';
import { runAudiences, type RunSummary } from '../audience/run-audiences.js';
import type { SyncDeps, SyncOptions } from '../audience/sync-audience.js';
import { verifyAudience, type VerifyDeps, type VerifyOptions, type VerifyResult } from './verify-audience.js';

export interface VerifySummary {
  audiences: VerifyResult[];
  /** The sync that resent what drifted (--repair). */
  repair?: RunSummary;
  exitCode: ExitCode;
}

export interface RepairSettings {
  /** The folder of audience files: the repair run syncs them. */
  dir: string;
  deps: Omit<SyncDeps, 'db' | 'schema' | 'log' | 'stop'>;
  options: Omit<SyncOptions, 'mode' | 'out'>;
}

export async function verifyAudiences(deps: VerifyDeps, names: readonly string[], options: VerifyOptions, repair?: RepairSettings): Promise<VerifySummary> {
  const known = await knownAudiences(deps.db, deps.schema);
  const selected = names.length > 0 ? known.filter((a) => names.includes(a.name)) : known;
  const missing = names.filter((n) => !known.some((a) => a.name === n));
  if (missing.length > 0) deps.log.warn('never synced, so nothing to verify', { audiences: missing.join(', ') });

  // Stratified: each audience's share of the sample in proportion to its members.
  const sizes = await Promise.all(selected.map(async (a) => (await countAudienceRows(deps.db, deps.schema, a.name)).members));
  const totalMembers = sizes.reduce((n, x) => n + x, 0);
  const results: VerifyResult[] = [];
  for (const [i, audience] of selected.entries()) {
    if (deps.stop?.aborted) break;
    const share = options.all || options.sample === undefined ? options.sample : totalMembers === 0 ? 0 : Math.ceil((options.sample * sizes[i]!) / totalMembers);
    results.push(await verifyAudience(deps, audience, { ...options, sample: share }));
  }
  let repairRun: RunSummary | undefined;
  const drifted = results.filter((r) => r.counts.repaired > 0).map((r) => r.audience);
  if (options.repair && !options.dryRun && repair && drifted.length > 0 && !deps.stop?.aborted) {
    deps.log.info('resending what drifted', { audiences: drifted.join(', ') });
    repairRun = await runAudiences({ ...repair.deps, db: deps.db, schema: deps.schema, log: deps.log, stop: deps.stop }, { dir: repair.dir, names: drifted }, { ...repair.options, mode: 'sync' });
  }
  // Drift found is exit 1 even when repaired: something outside braze-bridge changed Braze.
  const exitCode = combineExitCodes([...results.map((r) => r.exitCode), ...(repairRun ? [repairRun.exitCode] : [])]);
  return { audiences: results, repair: repairRun, exitCode };
}
