/**
 * Runs a set of audiences one after another. A bad file or a failed query fails that audience
 * only; an answer that would fail every audience (wrong key, wrong endpoint) stops the rest.
 */
import { createWriteStream } from 'node:fs';
import { finished } from 'node:stream/promises';
import { combineExitCodes, exitCodeFor, type ExitCode, messageOf } from '../errors.js';
import { emptyCounts } from '../types.js';
import { finishRun, startRun } from '../run/run-store.js';
import { checkAudiences } from './check-audiences.js';
import { findAudienceFiles, loadAudience } from './load-audience.js';
import { syncAudience, type AudienceResult, type SyncDeps, type SyncOptions } from './sync-audience.js';

export interface RunSummary {
  mode: SyncOptions['mode'] | 'retire';
  /** Nothing was sent and nothing recorded (plan, --dry-run). */
  dryRun: boolean;
  audiences: AudienceResult[];
  /** Audiences with members in the state schema and no file in the folder (name, members, last file). */
  orphans: Array<{ name: string; members: number; file: string }>;
  exitCode: ExitCode;
  durationMs: number;
}

export async function runAudiences(
  deps: SyncDeps,
  selection: { dir: string; names?: readonly string[] },
  options: Omit<SyncOptions, 'out'> & { outFile?: string },
): Promise<RunSummary> {
  const started = Date.now();
  const files = findAudienceFiles(selection.dir, selection.names);
  const out = options.outFile ? createWriteStream(options.outFile) : undefined;
  const results: AudienceResult[] = [];
  const checks = await checkAudiences(deps.db, deps.schema, selection.dir, deps.log, options.statementTimeoutMs);
  try {
    for (const file of files) {
      if (deps.stop?.aborted) break;
      let audience;
      try {
        const refused = checks.refused.get(file);
        if (refused) throw refused;
        audience = loadAudience(file);
      } catch (error) {
        deps.log.error(messageOf(error));
        const name = file.replace(/^.*\//, '').replace(/\.sql$/, '');
        let runId: number | undefined;
        if (options.mode !== 'plan' && !options.dryRun) {
          // A broken file is a run that failed: `status`, metrics and alerts must see it.
          try {
            runId = await startRun(deps.db, deps.schema, { job: options.mode, audience: name, args: options.args ?? {} });
            await finishRun(deps.db, deps.schema, runId, { status: 'failed', counts: emptyCounts(), error: messageOf(error) });
          } catch (recordError) {
            deps.log.warn('could not record the failed run', { audience: name, error: messageOf(recordError) });
          }
        }
        results.push({
          audience: name,
          file,
          status: 'failed',
          exitCode: exitCodeFor('failed'),
          counts: emptyCounts(),
          durationMs: 0,
          error: messageOf(error),
          ...(runId ? { runId } : {}),
        });
        continue;
      }
      const result = await syncAudience(deps, audience, { ...options, out });
      results.push(result);
      if (result.fatal) {
        deps.log.error('stopping: this error would repeat for every audience');
        break;
      }
    }
  } finally {
    if (out) {
      out.end();
      await finished(out);
    }
  }
  const orphans = checks.orphans.map((o) => ({ name: o.name, members: o.members, file: o.file }));
  return { mode: options.mode, dryRun: options.mode === 'plan' || options.dryRun === true, audiences: results, orphans, exitCode: combineExitCodes(results.map((r) => r.exitCode)), durationMs: Date.now() - started };
}
