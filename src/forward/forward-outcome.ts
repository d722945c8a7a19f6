/**
 * What a finished forward run tells people through the notify webhook: one line of text, and
 * whether it needs someone (stopped, or too many events rejected). A run that throws instead of
 * returning a summary is described by `failedOutcome` in run/after-run.ts.
 */
import type { Outcome } from '../errors.js';
import type { RunOutcome } from '../run/after-run.js';
import type { ForwardSummary } from './relay.js';

/** Outcomes that always notify: the events left pending wait for a person or the next run. */
const NEEDS_ATTENTION: ReadonlySet<Outcome> = new Set(['failed', 'aborted', 'interrupted', 'locked']);

export function forwardOutcome(summary: ForwardSummary): RunOutcome {
  const { sent, rejected, leftPending } = summary.events;
  const handled = sent + rejected;
  return {
    job: 'forward',
    text: `braze-bridge forward ${summary.destination}: ${summary.status}${summary.error ? `: ${summary.error}` : ''}, ${sent} sent, ${rejected} rejected, ${leftPending} left pending`,
    bad: NEEDS_ATTENTION.has(summary.status),
    failedRatio: handled === 0 ? 0 : rejected / handled,
    summary,
  };
}
