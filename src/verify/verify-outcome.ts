/** What a verify run tells the after-run step: its notification and trigger. */
import type { RunOutcome } from '../run/after-run.js';
import type { VerifySummary } from './verify-audiences.js';

/** Drift is worth a person's look above --notify-drift-ratio; a run that stopped always is. */
export function verifyOutcome(summary: VerifySummary): RunOutcome {
  const checked = summary.audiences.reduce((n, a) => n + a.counts.checked, 0);
  const drifted = summary.audiences.reduce((n, a) => n + a.counts.drifted, 0);
  const bad = summary.audiences.filter((a) => ['aborted', 'failed', 'interrupted'].includes(a.status));
  const text = bad.length > 0
    ? `braze-bridge verify: ${bad.map((a) => `${a.audience} ${a.status}${a.error ? `: ${a.error}` : ''}`).join('; ')}`
    : `braze-bridge verify: ${drifted} of ${checked} members drifted (${summary.audiences.filter((a) => a.counts.drifted > 0).map((a) => `${a.audience} ${a.counts.drifted}`).join(', ')})`;
  return { job: 'verify', text, bad: bad.length > 0, failedRatio: checked === 0 ? 0 : drifted / checked, summary };
}
