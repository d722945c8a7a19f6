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
import { escapeIdentifier, type Database, type Queryable } from './pool.js';

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

/** What the state schema holds compared with the migrations shipped: read-only, no DDL. */
export interface SchemaState {
  /** The schema does not exist, or has no migrations table. */
  missing: boolean;
  /** Shipped migrations not applied yet. */
  pending: Migration[];
  current: number;
}

/**
 * Read where `schema` stands, with SELECTs only (so a role without DDL rights can run it).
 * Throws ConfigError for a schema migrated by a newer braze-bridge or a changed migration.
 */
export async function schemaState(db: Queryable, schema: string, migrations = loadMigrations()): Promise<SchemaState> {
  const s = escapeIdentifier(schema);
  const { rows: found } = await db.query<{ t: string | null }>(`SELECT to_regclass($1)::text AS t`, [`${s}.migrations`]);
  const latest = Math.max(0, ...migrations.map((m) => m.id));
  if (!found[0]?.t) return { missing: true, pending: migrations, current: latest };
  const { rows } = await db.query<{ id: number; name: string; checksum: string }>(`SELECT id, name, checksum FROM ${s}.migrations ORDER BY id`);
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
  return { missing: false, pending: migrations.filter((m) => !done.has(m.id)), current: latest };
}

/**
 * Bring `schema` up to date. A schema already current costs two SELECTs and issues no DDL, so
 * a job role with only DML on the state tables can run every job; only a schema that is
 * missing or behind takes the lock and runs DDL, which needs CREATE on the database (or the
 * schema): a role without it gets a ConfigError that names the step and the privilege.
 */
export async function migrate(db: Database, schema: string, log: Logger = silentLogger, migrations = loadMigrations()): Promise<MigrateResult> {
  const first = await schemaState(db, schema, migrations);
  if (!first.missing && first.pending.length === 0) return { applied: [], current: first.current };
  const s = escapeIdentifier(schema);
  return db.withConnection(async (conn) => {
    await lock(conn, lockKey(schema, 'migrate'), 0);
    try {
      let step = `creating the state schema ${schema}`;
      const privileged = async <T>(what: string, privilege: string, fn: () => Promise<T>): Promise<T> => {
        step = what;
        try {
          return await fn();
        } catch (error) {
          const cause = (error as { cause?: { code?: string; message?: string } }).cause;
          if ((error as { code?: string }).code === '42501' || cause?.code === '42501') {
            throw new ConfigError([
              `${step}: ${cause?.message ?? (error as Error).message}; this needs ${privilege}. Run \`braze-bridge migrate\` once as a role that owns the database (an admin), then run jobs as the job role (README: "Grants for a job role")`,
            ], { cause: error });
          }
          throw error;
        }
      };
      // Another process may have migrated while we waited for the lock.
      const state = await schemaState(conn, schema, migrations);
      if (state.missing) {
        await privileged(`creating the state schema ${schema}`, `CREATE on the database (or an existing schema ${schema} owned by this role)`, async () => {
          await conn.query(`CREATE SCHEMA IF NOT EXISTS ${s}`);
          await conn.query(
            `CREATE TABLE IF NOT EXISTS ${s}.migrations (id int PRIMARY KEY, name text NOT NULL, checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`,
          );
        });
      }
      const applied: string[] = [];
      for (const m of state.pending) {
        await privileged(`applying migration ${m.name} to ${schema}`, `ownership of (or CREATE on) schema ${schema}`, async () => {
          await conn.query('BEGIN');
          try {
            await conn.query(m.sql.replaceAll('{{schema}}', s));
            await conn.query(`INSERT INTO ${s}.migrations (id, name, checksum) VALUES ($1, $2, $3)`, [m.id, m.name, m.checksum]);
            await conn.query('COMMIT');
          } catch (error) {
            await conn.query('ROLLBACK').catch(() => {});
            throw error;
          }
        });
        log.info('applied migration', { migration: m.name, schema });
        applied.push(m.name);
      }
      return { applied, current: state.current };
    } finally {
      await unlock(conn, lockKey(schema, 'migrate'), 0);
    }
  });
}

/**
 * For read-only commands (status, failures, currents status): the schema must exist and be
 * current; nothing is created. A missing schema is most often a mistyped --state-schema.
 */
export async function requireCurrentSchema(db: Queryable, schema: string): Promise<void> {
  const state = await schemaState(db, schema);
  if (state.missing) {
    throw new ConfigError([`state schema ${schema} does not exist in this database: check --state-schema (or BRAZE_BRIDGE_STATE_SCHEMA), or run \`braze-bridge migrate\` (or a sync) first`]);
  }
  if (state.pending.length > 0) {
    throw new ConfigError([`state schema ${schema} needs migration ${state.pending.map((m) => m.name).join(', ')}: run \`braze-bridge migrate\` (as an admin)`]);
  }
}
