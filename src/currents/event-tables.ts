/**
 * The event tables' DDL: the target schema, and one table per event type, created on first
 * sight from the writer schema and widened when a later file carries new fields. DDL runs in
 * its own short transaction behind an advisory lock, so concurrent ingesters never race on
 * CREATE or ALTER; a column whose type would change is an error for that file, never a
 * silent cast.
 */
import { SchemaMismatchError } from '../errors.js';
import { lockForTransaction, lockKey } from '../db/locks.js';
import { escapeIdentifier, type Database } from '../db/pool.js';
import type { EventColumn } from './map-schema.js';

/** Per process: tables whose columns are known to cover a schema, to skip the catalog. */
const known = new Map<string, Map<string, string>>();

export async function ensureEventTable(db: Database, schema: string, table: string, columns: readonly EventColumn[]): Promise<void> {
  const qualified = `${escapeIdentifier(schema)}.${escapeIdentifier(table)}`;
  const cached = known.get(qualified);
  if (cached && columns.every((c) => cached.get(c.name) === c.pgType)) return;

  await db.withTransaction(async (tx) => {
    await lockForTransaction(tx, lockKey(schema, `currents-table:${table}`), 2);
    const existing = await tx.query<{ name: string; type: string }>(
      `SELECT attname::text AS name, format_type(atttypid, atttypmod) AS type FROM pg_attribute
        WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped`,
      [qualified],
    );
    const have = new Map(existing.rows.map((r) => [r.name, r.type]));
    if (have.size === 0) {
      const defs = columns.map((c) => `${escapeIdentifier(c.name)} ${c.pgType}${c.name === 'id' ? ' PRIMARY KEY' : ''}`);
      await tx.query(
        `CREATE TABLE ${qualified} (${defs.join(', ')}, occurred_at timestamptz, source_key text NOT NULL, loaded_at timestamptz NOT NULL DEFAULT now())`,
      );
      await tx.query(`CREATE INDEX ${escapeIdentifier(`${table.slice(0, 50)}_occurred_idx`)} ON ${qualified} (occurred_at)`);
      for (const c of columns) have.set(c.name, c.pgType);
      for (const c of ['occurred_at', 'source_key', 'loaded_at']) have.set(c, '');
    } else {
      for (const c of columns) {
        const current = have.get(c.name);
        if (current === undefined) {
          await tx.query(`ALTER TABLE ${qualified} ADD COLUMN ${escapeIdentifier(c.name)} ${c.pgType}`);
          have.set(c.name, c.pgType);
        } else if (current !== c.pgType) {
          throw new SchemaMismatchError(`field "${c.name}" is ${c.pgType} in this file but ${current} in table ${schema}.${table}; the file is not loaded`);
        }
      }
    }
    known.set(qualified, have);
  });
}

/** The target schema, created once behind a lock: concurrent CREATE SCHEMA IF NOT EXISTS can collide. */
export async function ensureEventSchema(db: Database, schema: string): Promise<void> {
  await db.withTransaction(async (tx) => {
    await lockForTransaction(tx, lockKey(schema, 'currents-schema'), 2);
    await tx.query(`CREATE SCHEMA IF NOT EXISTS ${escapeIdentifier(schema)}`);
  });
}
