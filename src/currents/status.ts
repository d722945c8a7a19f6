/**
 * `currents status`: per event type, what is loaded and the newest hour; failures with their
 * errors; and the hours missing between the oldest and newest hour loaded. Braze cannot
 * replay data it failed to write, so a gap must be visible. The queries are in manifest.ts;
 * this module shapes and formats their answer.
 */
import type { Queryable } from '../db/pool.js';
import { renamedEventTables } from './event-tables.js';
import { failedFiles, loadedHours, statusByEventType } from './manifest.js';

export interface CurrentsStatus {
  eventTypes: Array<{ eventType: string; filesLoaded: number; rows: number; duplicates: number; failed: number; pending: number; gone: number; newestHour: string | null }>;
  failures: Array<{ key: string; eventType: string; error: string; recordIndex: number | null; attempts: number }>;
  /** Hours between the oldest and newest loaded hour in which no file of any type arrived. */
  missingHours: string[];
  oldestHour: string | null;
  newestHour: string | null;
  /** Event types whose table is not their normalised name: too long for 63 bytes, or colliding with another type. */
  renamedTables: Array<{ targetSchema: string; eventType: string; table: string }>;
}

/** An hour as the keys write it: YYYY-MM-DD-HH (UTC). */
const hourOf = (d: Date | null) => (d ? d.toISOString().slice(0, 13).replace('T', '-') : null);

export async function currentsStatus(db: Queryable, stateSchema: string, source?: string): Promise<CurrentsStatus> {
  const types = await statusByEventType(db, stateSchema, source);
  const failures = await failedFiles(db, stateSchema, source);
  const hours = await loadedHours(db, stateSchema, source);
  return {
    eventTypes: types.map((t) => ({ ...t, newestHour: hourOf(t.newestHour) })),
    failures,
    missingHours: hours.missing.map((d) => hourOf(d)!),
    oldestHour: hourOf(hours.oldest),
    newestHour: hourOf(hours.newest),
    renamedTables: await renamedEventTables(db, stateSchema),
  };
}

export function formatStatus(status: CurrentsStatus): string {
  const header = ['event type', 'files', 'rows', 'duplicates', 'failed', 'pending', 'newest hour'];
  const rows = status.eventTypes.map((e) => [e.eventType, String(e.filesLoaded), String(e.rows), String(e.duplicates), String(e.failed), String(e.pending), e.newestHour ?? '-']);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  const out = [line(header), ...rows.map(line)];
  if (status.eventTypes.length === 0) out.push('(nothing ingested yet)');
  out.push('');
  out.push(status.oldestHour ? `hours loaded: ${status.oldestHour} … ${status.newestHour} (UTC)` : 'hours loaded: none');
  if (status.missingHours.length > 0) {
    const shown = status.missingHours.slice(0, 24).join(', ');
    out.push(`MISSING HOURS (no file of any type; Braze cannot replay them): ${status.missingHours.length}: ${shown}${status.missingHours.length > 24 ? ', …' : ''}`);
  } else if (status.oldestHour) {
    out.push('no missing hours between the oldest and newest hour loaded');
  }
  const gone = status.eventTypes.reduce((n, e) => n + e.gone, 0);
  if (gone > 0) out.push(`GONE: ${gone} file(s) were deleted from the bucket before they were loaded (counted as failed; their FAILED lines say so)`);
  for (const r of status.renamedTables) out.push(`TABLE ${r.eventType} → ${r.targetSchema}.${r.table} (its own name is too long or taken by another type)`);
  for (const f of status.failures) out.push(`FAILED ${f.key}: ${f.error}${f.recordIndex !== null ? ` (record ${f.recordIndex})` : ''}`);
  return out.join('\n');
}
