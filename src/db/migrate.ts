/**
 * Forward-only migrations from numbered `.sql` files, applied behind an advisory lock so that
 * two processes starting at once do not both apply them. Each file runs in its own transaction
 * with its checksum recorded; a database migrated by a newer braze-bridge is refused rather
 * than written to by code that does not know its shape.
 */
import { createHash } from 'node:crypto';
import { lock, lockKey, unlock } from './locks.js';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError } from '../errors.js';
import { silentLogger, type Logger } from '../log.js';
import { packageRoot } from '../config/package-root.js';
import { escapeIdentifier, type Database } from './pool.js';

export interface Migration {
  id: number;
  name: string;
  sql: string;
  checksum: string;
}

/** The migrations shipped with this version, in order. */
export function loadMigrations(dir = join(packageRoot(), 'sql', 'migrations')): Migration[] {
  return readdirSync(dir)
    .filter((f) => /^\d{4}_[a-z0-9_]+\.sql$/.test(f))
    .sort()
    .map((file) => {
      const sql = readFileSync(join(dir, file), 'utf8');
      return { id: Number(file.slice(0, 4)), name: file, sql, checksum: createHash('sha256').update(sql).digest('hex') };
    });
}

export interface MigrateResult {
  applied: string[];
  current: number;
}

export async function migrate(db: Database, schema: string, log: Logger = silentLogger, migrations = loadMigrations()): Promise<MigrateResult> {
  const s = escapeIdentifier(schema);
  return db.withConnection(async (conn) => {
    await lock(conn, lockKey(schema, 'migrate'), 0);
    try {
      await conn.query(`CREATE SCHEMA IF NOT EXISTS ${s}`);
      await conn.query(
        `CREATE TABLE IF NOT EXISTS ${s}.migrations (id int PRIMARY KEY, name text NOT NULL, checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`,
      );
      const { rows } = await conn.query<{ id: number; name: string; checksum: string }>(`SELECT id, name, checksum FROM ${s}.migrations ORDER BY id`);
      const known = new Map(migrations.map((m) => [m.id, m]));
      for (const row of rows) {
        const m = known.get(row.id);
        if (!m) {
          throw new ConfigError([
            `state schema ${schema} has migration ${row.name}, which this braze-bridge does not know: upgrade braze-bridge, or use another --state-schema`,
          ]);
        }
        if (m.checksum !== row.checksum) {
          throw new ConfigError([`migration ${m.name} was changed after it was applied to ${schema}: restore the file; migrations are forward-only`]);
        }
      }
      const done = new Set(rows.map((r) => r.id));
      const applied: string[] = [];
      for (const m of migrations) {
        if (done.has(m.id)) continue;
        await conn.query('BEGIN');
        try {
          await conn.query(m.sql.replaceAll('{{schema}}', s));
          await conn.query(`INSERT INTO ${s}.migrations (id, name, checksum) VALUES ($1, $2, $3)`, [m.id, m.name, m.checksum]);
          await conn.query('COMMIT');
        } catch (error) {
          await conn.query('ROLLBACK').catch(() => {});
          throw error;
        }
        log.info('applied migration', { migration: m.name, schema });
        applied.push(m.name);
      }
      return { applied, current: Math.max(0, ...migrations.map((m) => m.id)) };
    } finally {
      await unlock(conn, lockKey(schema, 'migrate'), 0);
    }
  });
}
