/**
 * The ingest summary for people (stdout without --json): what was listed, loaded, skipped and
 * failed, and the one flag that retries the failures, so the next step is on the screen.
 */
import type { IngestSummary } from './ingest.js';

export function formatIngest(s: IngestSummary): string {
  const out = [
    `braze-bridge currents ingest from ${s.source}: ${s.status} in ${(s.durationMs / 1000).toFixed(1)} s (run ${s.runId})`,
    `  keys listed ${s.discovered.listed}, Currents files ${s.discovered.currents} (new ${s.discovered.new}), other keys ignored ${s.discovered.ignored}`,
    `  files loaded ${s.files.loaded}, already loaded ${s.files.alreadyLoaded}, failed ${s.files.failed}, ${s.files.gone ? `gone from the bucket ${s.files.gone}, ` : ''}left pending ${s.files.leftPending}`,
    `  rows loaded ${s.rows}, duplicate events skipped ${s.duplicates}${s.nulReplaced ? `, NUL characters replaced by U+FFFD ${s.nulReplaced}` : ''}`,
  ];
  if (s.discovered.refused > 0) out.push(`  keys refused ${s.discovered.refused} (not loaded; fix or remove them):`);
  for (const r of s.refusedKeys) out.push(`  REFUSED ${r.key}: ${r.reason}`);
  for (const [type, t] of Object.entries(s.perType).sort()) out.push(`  ${type}: ${t.files} files, ${t.rows} rows, ${t.duplicates} duplicates${t.failed ? `, ${t.failed} failed` : ''}`);
  for (const f of s.failures) out.push(`  FAILED ${f.key}: ${f.error}${f.recordIndex !== null ? ` (record ${f.recordIndex})` : ''}`);
  for (const key of s.goneKeys) out.push(`  GONE ${key}: not in the bucket any more; marked failed, never loaded`);
  if (s.files.gone > s.goneKeys.length) out.push(`  … and ${s.files.gone - s.goneKeys.length} more gone files (currents status lists them)`);
  if (s.files.failed > 0) out.push('  failed files are skipped by later runs until `currents ingest --retry-failed`');
  return out.join('\n');
}
