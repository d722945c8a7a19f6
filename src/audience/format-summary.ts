/** The run summary for people (a table) and for scripts (`--json`). */
import type { RunSummary } from './run-audiences.js';

const COLUMNS = [
  ['members', 'members'],
  ['new', 'new'],
  ['changed', 'changed'],
  ['exited', 'exited'],
  ['unchanged', 'unchanged'],
  ['failed', 'failed'],
  ['updates', 'updates'],
  ['requests', 'requests'],
  ['retries', 'retries'],
  ['rateLimited', '429s'],
] as const;

export function formatSummary(summary: RunSummary): string {
  const planning = summary.mode === 'plan';
  const header = ['audience', 'status', ...COLUMNS.filter(([k]) => !planning || !['requests', 'retries', 'rateLimited'].includes(k)).map(([, label]) => label)];
  const rows = summary.audiences.map((a) => [
    a.audience,
    a.status,
    ...COLUMNS.filter(([k]) => !planning || !['requests', 'retries', 'rateLimited'].includes(k)).map(([k]) => String(a.counts[k])),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i < 2 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  const out = [
    `braze-bridge ${summary.mode}: ${summary.audiences.length} audience(s) in ${(summary.durationMs / 1000).toFixed(1)} s${planning ? ' (dry run: nothing sent, no state changed)' : ''}`,
    line(header),
    ...rows.map(line),
  ];
  for (const a of summary.audiences) {
    if (a.error) out.push(`  ${a.audience}: ${a.error}`);
    if (a.guardrail?.tripped && planning) {
      out.push(`  ${a.audience}: a sync would stop here: ${(a.guardrail.ratio * 100).toFixed(1)}% of existing members change or exit (limit ${a.guardrail.limit}); use --force if intended`);
    }
    if (planning && Object.keys(a.counts.perAttribute).length > 0) {
      out.push(`  ${a.audience} data points per attribute: ${Object.entries(a.counts.perAttribute).map(([k, n]) => `${k}=${n}`).join(', ')}`);
    }
  }
  if (!planning && summary.audiences.some((a) => a.counts.failed > 0)) out.push('  failed members stay unconfirmed and are retried by the next run');
  return out.join('\n');
}

export function summaryJson(summary: RunSummary): string {
  return JSON.stringify(summary, null, 2);
}
