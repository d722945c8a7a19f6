/**
 * What an ingest run tells a person through --notify-url: one line, and whether it must be
 * sent whatever the failure ratio. Shared by `currents ingest` and `schedule`, so both alert
 * with the same words.
 */
import type { RunOutcome } from '../run/after-run.js';
import type { IngestSummary } from './ingest.js';

/** The notification and its trigger for an ingest run that returned a summary. */
export function ingestOutcome(summary: IngestSummary): RunOutcome {
  return {
    job: 'ingest',
    text:
      summary.status === 'interrupted'
        ? `braze-bridge currents ingest from ${summary.source}: interrupted by a signal (${summary.files.loaded} files loaded)`
        : `braze-bridge currents ingest from ${summary.source}: ${summary.files.failed} file(s) failed${summary.failures[0] ? `, e.g. ${summary.failures[0].key}: ${summary.failures[0].error}` : ''}`,
    bad: summary.status === 'interrupted',
    failedRatio: summary.files.failed / Math.max(1, summary.files.loaded + summary.files.failed),
    summary,
  };
}
