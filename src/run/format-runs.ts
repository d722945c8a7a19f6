/** The run history as a table for people (`status`). */
import type { RunRow } from './run-store.js';

export function formatRuns(rows: RunRow[]): string {
  if (rows.length === 0) return 'no runs recorded yet';
  const n = (r: RunRow, k: string) => String(typeof r.counts[k] === 'number' ? r.counts[k] : '');
  const header = ['run', 'job', 'audience / source', 'status', 'started (UTC)', 'duration', 'new', 'changed', 'exited', 'updates', 'failed'];
  const table = rows.map((r) => [
    String(r.id),
    r.job,
    r.audience ?? String((r.counts as { source?: string }).source ?? ''),
    r.status,
    r.startedAt.slice(0, 19).replace('T', ' '),
    r.durationMs === null ? '-' : `${(r.durationMs / 1000).toFixed(1)} s`,
    n(r, 'new'),
    n(r, 'changed'),
    n(r, 'exited'),
    r.job === 'ingest' ? String((r.counts as { rows?: number }).rows ?? '') : n(r, 'updates'),
    r.job === 'ingest' ? String(((r.counts as { files?: { failed?: number } }).files?.failed) ?? '') : n(r, 'failed'),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...table.map((row) => row[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i >= 5 ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join('  ');
  const out = [line(header), ...table.map(line)];
  for (const r of rows) {
    if (r.job === 'verify') {
      const c = r.counts as { checked?: number; drifted?: number; missingProfiles?: number; waiting?: number };
      out.push(`  run ${r.id} (verify ${r.audience ?? ''}): ${c.checked ?? 0} checked, ${c.drifted ?? 0} drifted, ${c.missingProfiles ?? 0} missing from Braze, ${c.waiting ?? 0} update-only waiting`);
    }
    if (r.error) out.push(`  run ${r.id}: ${r.error}`);
  }
  return out.join('\n');
}
