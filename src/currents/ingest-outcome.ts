/**
 * What an ingest run tells a person through --notify-url: one line, and whether it must be
 * sent whatever the failure ratio. Shared by `currents ingest` and `schedule`, so both alert
 * with the same words.
 */
import type { RunOutcome } from '../run/after-run.js';
import type { IngestSummary } from './ingest.js';

/** The notification and its trigger for an ingest run that returned a summary. */
export function ingestOutcome(summary: IngestSummary): RunOutcome {
  const { loaded, failed, gone } = summary.files;
  const refused = summary.discovered.refused;
  const first = summary.failures[0]
    ? `${summary.failures[0].key}: ${summary.failures[0].error}`
    : summary.goneKeys[0]
      ? `${summary.goneKeys[0]}: gone from the bucket`
      : summary.refusedKeys[0]
        ? `${summary.refusedKeys[0].key}: ${summary.refusedKeys[0].reason}`
        : undefined;
  const problems = [`${failed} file(s) failed`, ...(gone ? [`${gone} gone from the bucket before they were loaded`] : []), ...(refused ? [`${refused} key(s) refused`] : [])];
  return {
    job: 'ingest',
    text:
      summary.status === 'interrupted'
        ? `braze-bridge currents ingest from ${summary.source}: interrupted by a signal (${loaded} files loaded)`
        : `braze-bridge currents ingest from ${summary.source}: ${problems.join(', ')}${first ? `, e.g. ${first}` : ''}`,
    bad: summary.status === 'interrupted',
    // Gone files and refused keys are files that will not load, counted as failed ones.
    failedRatio: (failed + gone + refused) / Math.max(1, loaded + failed + gone + refused),
    summary,
  };
}
