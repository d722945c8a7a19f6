/**
 * `currents status`: per event type, what is loaded and the newest hour; failures with their
 * errors; and the hours missing between the oldest and newest hour loaded. Braze cannot
 * replay data it failed to write, so a gap must be visible.
 */
import { escapeIdentifier, type Queryable } from '../db/pool.js';

export interface CurrentsStatus {
  eventTypes: Array<{ eventType: string; filesLoaded: number; rows: number; duplicates: number; failed: number; pending: number; newestHour: string | null }>;
  failures: Array<{ key: string; eventType: string; error: string; recordIndex: number | null; attempts: number }>;
  /** Hours between the oldest and newest loaded hour in which no file of any type arrived. */
  missingHours: string[];
  oldestHour: string | null;
  newestHour: string | null;
}

export async function currentsStatus(db: Queryable, stateSchema: string, source?: string): Promise<CurrentsStatus> {
  const t = `${escapeIdentifier(stateSchema)}.currents_files`;
  const types = await db.query<{ event_type: string; loaded: string; rows: string; dups: string; failed: string; pending: string; newest: Date | null }>(
    `SELECT event_type, count(*) FILTER (WHERE status = 'loaded') AS loaded, coalesce(sum(rows_loaded), 0) AS rows, coalesce(sum(duplicates), 0) AS dups,
            count(*) FILTER (WHERE status = 'failed') AS failed, count(*) FILTER (WHERE status = 'pending') AS pending,
            max(hour) FILTER (WHERE status = 'loaded') AS newest
       FROM ${t} WHERE $1::text IS NULL OR source = $1 GROUP BY event_type ORDER BY event_type`,
    [source ?? null],
  );
  const failures = await db.query<{ key: string; event_type: string; error: string; record_index: string | null; attempts: number }>(
    `SELECT key, event_type, error, record_index, attempts FROM ${t} WHERE status = 'failed' AND ($1::text IS NULL OR source = $1) ORDER BY hour, key LIMIT 100`,
    [source ?? null],
  );
  const gaps = await db.query<{ oldest: Date | null; newest: Date | null; missing: Date[] | null }>(
    `WITH loaded AS (SELECT DISTINCT hour FROM ${t} WHERE status = 'loaded' AND ($1::text IS NULL OR source = $1)),
          bounds AS (SELECT min(hour) AS oldest, max(hour) AS newest FROM loaded)
     SELECT b.oldest, b.newest,
            ARRAY(SELECT h FROM generate_series(b.oldest, b.newest, interval '1 hour') AS h WHERE h NOT IN (SELECT hour FROM loaded) ORDER BY h) AS missing
       FROM bounds b`,
    [source ?? null],
  );
  const g = gaps.rows[0]!;
  const iso = (d: Date | null) => (d ? d.toISOString().slice(0, 13).replace('T', '-') : null);
  return {
    eventTypes: types.rows.map((r) => ({
      eventType: r.event_type,
      filesLoaded: Number(r.loaded),
      rows: Number(r.rows),
      duplicates: Number(r.dups),
      failed: Number(r.failed),
      pending: Number(r.pending),
      newestHour: iso(r.newest),
    })),
    failures: failures.rows.map((f) => ({ key: f.key, eventType: f.event_type, error: f.error, recordIndex: f.record_index === null ? null : Number(f.record_index), attempts: f.attempts })),
    missingHours: (g.missing ?? []).map((d) => iso(d)!),
    oldestHour: iso(g.oldest),
    newestHour: iso(g.newest),
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
  for (const f of status.failures) out.push(`FAILED ${f.key}: ${f.error}${f.recordIndex !== null ? ` (record ${f.recordIndex})` : ''}`);
  return out.join('\n');
}
