/** What a sync, backfill or scheduled run tells the after-run step: its notification and trigger. */
import type { RunOutcome } from '../run/after-run.js';
import type { RunSummary } from './run-audiences.js';

export function syncOutcome(summary: RunSummary): RunOutcome {
  const members = summary.audiences.reduce((n, a) => n + a.counts.members, 0);
  const failed = summary.audiences.reduce((n, a) => n + a.counts.failed, 0);
  const bad = summary.audiences.filter((a) => ['aborted', 'failed', 'interrupted'].includes(a.status));
  const text =
    bad.length > 0
      ? `braze-bridge ${summary.mode}: ${bad.map((a) => `${a.audience} ${a.status}${a.error ? `: ${a.error}` : ''}`).join('; ')}`
      : `braze-bridge ${summary.mode}: ${failed} of ${members} members failed (${summary.audiences.filter((a) => a.counts.failed > 0).map((a) => `${a.audience} ${a.counts.failed}`).join(', ')})`;
  return { job: summary.mode, text, bad: bad.length > 0, failedRatio: members === 0 ? 0 : failed / members, summary };
}
