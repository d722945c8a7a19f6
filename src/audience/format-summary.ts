/** The run summary for people (a table) and for scripts (`--json`). */
import type { AudienceCounts } from '../types.js';
import type { RunSummary } from './run-audiences.js';

type Column = [keyof AudienceCounts, string];

/** Members by kind, in every summary. */
const MEMBER_COLUMNS: Column[] = [
  ['members', 'members'],
  ['new', 'new'],
  ['changed', 'changed'],
  ['exited', 'exited'],
  ['unchanged', 'unchanged'],
  ['failed', 'failed'],
];
/** A plan shows the updates it would send; a sync the updates Braze accepted, and what it took. */
const PLAN_COLUMNS: Column[] = [...MEMBER_COLUMNS, ['plannedUpdates', 'planned updates']];
const SYNC_COLUMNS: Column[] = [...MEMBER_COLUMNS, ['updates', 'updates'], ['requests', 'requests'], ['retries', 'retries'], ['rateLimited', '429s']];

export function formatSummary(summary: RunSummary): string {
  const planning = summary.dryRun;
  const columns = planning ? PLAN_COLUMNS : SYNC_COLUMNS;
  const header = ['audience', 'status', ...columns.map(([, label]) => label)];
  const rows = summary.audiences.map((a) => [a.audience, a.status, ...columns.map(([k]) => String(a.counts[k]))]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i < 2 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  const out = [
    `braze-bridge ${summary.mode}: ${summary.audiences.length} audience(s) in ${(summary.durationMs / 1000).toFixed(1)} s${planning ? ' (dry run: nothing sent, no state changed)' : ''}`,
    line(header),
    ...rows.map(line),
  ];
  for (const a of summary.audiences) {
    if (a.error) out.push(`  ${a.audience}: ${a.error}`);
    const g = a.guardrail;
    if (g?.tripped && planning) {
      out.push(
        `  ${a.audience}: a sync would stop here: ${g.exits} exit(s) and ${g.valueChanges} value change(s), ${(g.ratio * 100).toFixed(1)}% of ${g.existing} existing members (limit ${g.limit})${g.cause ? `; likely cause: ${g.cause}` : ''}; use --force if intended`,
      );
    }
    if (!planning && a.counts.plannedUpdates !== a.counts.updates && a.status !== 'locked') {
      out.push(`  ${a.audience}: ${a.counts.updates} of ${a.counts.plannedUpdates} planned updates accepted by Braze`);
    }
    if (a.counts.unverified > 0) {
      out.push(`  ${a.audience}: ${a.counts.unverified} member(s) sent under @update_existing_only true are not known to exist in Braze; they are sent again each run`);
    }
    for (const f of (a.failureReasons ?? []).slice(0, 10)) {
      out.push(`  ${a.audience}: ${f.count} member(s) cannot be sent: ${f.reason}${f.examples.length ? ` (e.g. ${f.examples.join(', ')})` : ''}`);
    }
    const perAttribute = planning ? a.counts.plannedPerAttribute : {};
    if (Object.keys(perAttribute).length > 0) {
      out.push(`  ${a.audience} data points per attribute: ${Object.entries(perAttribute).map(([k, n]) => `${k}=${n}`).join(', ')}`);
    }
  }
  for (const o of summary.orphans) {
    out.push(`  WARNING: audience ${o.name} has ${o.members} member(s) in Braze but no file here (last synced from ${o.file}); restore the file or run braze-bridge retire ${o.name}`);
  }
  if (!planning && summary.audiences.some((a) => a.counts.failed > 0)) out.push('  failed members stay unconfirmed and are retried by the next run');
  return out.join('\n');
}

export function summaryJson(summary: RunSummary): string {
  return JSON.stringify(summary, null, 2);
}
