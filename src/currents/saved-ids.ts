/**
 * The ids an ingest wrote lately to each event table (recent-ids.ts), kept in the state schema
 * from one run to the next (migration 0010), so that a run's files, whose repeats are mostly of
 * the files the run before loaded, look up those ids rather than fail on the key and look up
 * every id. Another process's run may save over them: the filters only decide what is looked
 * up, so a lost or stale row costs lookups, never a wrong row.
 */
import { escapeIdentifier, type Queryable } from '../db/pool.js';
import { RecentIds } from './recent-ids.js';
import type { TableName } from './table-turns.js';

const saved = (schema: string) => `${escapeIdentifier(schema)}.currents_recent_ids`;

/** The ids the last run left for `name`, or none. */
export async function restoreRecentIds(db: Queryable, stateSchema: string, name: TableName): Promise<RecentIds> {
  const { rows } = await db.query<{ filters: Buffer[]; counts: number[] }>(`SELECT filters, counts FROM ${saved(stateSchema)} WHERE target_schema = $1 AND table_name = $2`, [
    name.schema,
    name.table,
  ]);
  const row = rows[0];
  if (!row || row.filters.length !== row.counts.length) return new RecentIds();
  return RecentIds.restore(row.filters.map((bits, i) => ({ bits: new Uint8Array(bits.buffer, bits.byteOffset, bits.length), count: row.counts[i]! })));
}

/** Keep each table's ids for the next run. */
export async function saveRecentIds(db: Queryable, stateSchema: string, tables: ReadonlyArray<{ name: TableName; ids: RecentIds }>): Promise<void> {
  for (const { name, ids } of tables) {
    const filters = ids.save();
    if (filters.length === 0) continue;
    await db.query(
      `INSERT INTO ${saved(stateSchema)} (target_schema, table_name, filters, counts) VALUES ($1, $2, $3, $4)
       ON CONFLICT (target_schema, table_name) DO UPDATE SET filters = EXCLUDED.filters, counts = EXCLUDED.counts, saved_at = now()`,
      [name.schema, name.table, filters.map((f) => Buffer.from(f.bits.buffer, f.bits.byteOffset, f.bits.length)), filters.map((f) => f.count)],
    );
  }
}
