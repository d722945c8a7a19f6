/**
 * The event tables' DDL and names.
 *
 * Names: each (target schema, event type) gets its table once, recorded in the state schema's
 * currents_event_tables: the normalised name (users_messages_email_send) when it fits in 63
 * bytes and no other type has it, else a shortened name with a stable hash of the exact type.
 * So users.Foo and users_foo, or two long types sharing their first 50 characters, never share
 * a table, and forwarding finds the table through the same record.
 *
 * Columns: a table is created on the first file of its type, inside that file's transaction, so
 * a file that fails leaves no empty table behind; later files widen it in a short transaction
 * of their own behind an advisory lock, so concurrent ingesters never race on ALTER. Fields
 * that cannot be columns (names PostgreSQL cannot hold or braze-bridge's own columns, or past
 * PostgreSQL's 1,600-column limit) go into the table's `extra_fields` jsonb. A column whose type
 * would change is an error for that file, never a silent cast.
 */
import { SchemaMismatchError } from '../errors.js';
import { lockForTransaction, lockKey } from '../db/locks.js';
import { escapeIdentifier, type Connection, type Database, type Queryable } from '../db/pool.js';
import { ADDED_COLUMNS, type EventColumn } from './map-schema.js';
import { normalisedTableName, tableName } from './parse-key.js';

/** Columns a table may reach (PostgreSQL allows 1,600, dropped ones included); the rest go to extra_fields. */
export const MAX_COLUMNS = 1590;
/**
 * Estimated bytes of a row's columns a table may reach: a heap row must fit in 8 kB, so 1,590
 * bigint columns ("row is too big") would fail every file even below the column limit.
 * Fixed-width columns count their size, others 8 (a short value, or part of a TOAST pointer).
 */
export const MAX_ROW_BYTES = 6000;
const widthOf = (pgType: string) => (pgType === 'boolean' ? 1 : pgType === '' ? 0 : 8);
const FIELD = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/;

/** Where a file's fields go in its table. */
export interface TablePlan {
  /** Fields stored in columns of their own name. */
  columns: EventColumn[];
  /** Fields stored under their name in the extra_fields jsonb column. */
  extra: EventColumn[];
  /** The table has the id_key column (tables created since migration 0006): long ids load. */
  idKey: boolean;
}

/** The table stores the event's id in a column: repeats are found by it (without, every row loads). */
export function hasIdColumn(plan: TablePlan): boolean {
  return plan.columns.some((c) => c.name === 'id');
}

/** The event's `time` is a column of epoch seconds: occurred_at is to_timestamp("time"). */
export function hasTimeColumn(plan: TablePlan): boolean {
  return plan.columns.some((c) => c.name === 'time' && c.pgType === 'bigint');
}

/** Ids up to this many bytes are their own key; a longer one is keyed by its MD5 (idKeySql). */
export const OWN_KEY_BYTES = 1000;

/**
 * The id_key of an id, as SQL over the text expression `id`: the id, or the MD5 of an id too long
 * for a btree entry (about 2.7 kB), so very long ids load. md5 because a generated column needs an
 * immutable function; sha256 of text is not. The table's generated column and every lookup by
 * key use this one expression.
 */
export function idKeySql(id: string): string {
  return `CASE WHEN octet_length(${id}) > ${OWN_KEY_BYTES} THEN 'md5:' || md5(${id}) ELSE ${id} END`;
}

/** Per process: tables whose columns are known, to skip the catalog. */
const known = new Map<string, Map<string, string>>();

/**
 * Per database and process: event types' tables already resolved. Once recorded, a type's table
 * never changes, so a process asks once per type, not once per file (a round trip each).
 */
const resolved = new WeakMap<Database, Map<string, string>>();

/** The table of an event type in a target schema, allocated and recorded on first use. */
export async function resolveEventTable(db: Database, stateSchema: string, targetSchema: string, eventType: string): Promise<string> {
  const key = JSON.stringify([stateSchema, targetSchema, eventType]);
  let tables = resolved.get(db);
  if (!tables) resolved.set(db, (tables = new Map()));
  const table = tables.get(key) ?? (await allocateEventTable(db, stateSchema, targetSchema, eventType));
  tables.set(key, table);
  return table;
}

async function allocateEventTable(db: Database, stateSchema: string, targetSchema: string, eventType: string): Promise<string> {
  const found = await lookupEventTable(db, stateSchema, targetSchema, eventType);
  if (found) return found;
  return db.withTransaction(async (tx) => {
    await lockForTransaction(tx, lockKey(stateSchema, `currents-names:${targetSchema}`), 2);
    const again = await lookupEventTable(tx, stateSchema, targetSchema, eventType);
    if (again) return again;
    for (const candidate of [tableName(eventType), tableName(eventType, true)]) {
      const { rowCount } = await tx.query(
        `INSERT INTO ${escapeIdentifier(stateSchema)}.currents_event_tables (target_schema, event_type, table_name) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`,
        [targetSchema, eventType, candidate],
      );
      if (rowCount) return candidate;
    }
    throw new SchemaMismatchError(`event type ${eventType}: no free table name in ${targetSchema} (its hashed name is taken too)`);
  });
}

export async function lookupEventTable(db: Queryable, stateSchema: string, targetSchema: string, eventType: string): Promise<string | undefined> {
  const { rows } = await db.query<{ table_name: string }>(
    `SELECT table_name FROM ${escapeIdentifier(stateSchema)}.currents_event_tables WHERE target_schema = $1 AND event_type = $2`,
    [targetSchema, eventType],
  );
  return rows[0]?.table_name;
}

/** Every event type whose table is not its normalised name, for `currents status`. */
export async function renamedEventTables(db: Queryable, stateSchema: string): Promise<Array<{ targetSchema: string; eventType: string; table: string }>> {
  const { rows } = await db.query<{ target_schema: string; event_type: string; table_name: string }>(
    `SELECT target_schema, event_type, table_name FROM ${escapeIdentifier(stateSchema)}.currents_event_tables ORDER BY 1, 2`,
  );
  return rows.filter((r) => r.table_name !== normalisedTableName(r.event_type)).map((r) => ({ targetSchema: r.target_schema, eventType: r.event_type, table: r.table_name }));
}

/** All columns of a table, dropped ones included (they count toward the limit), or none. */
async function columnsOf(db: Queryable, qualified: string): Promise<{ have: Map<string, string>; slots: number }> {
  const { rows } = await db.query<{ name: string; type: string; dropped: boolean }>(
    `SELECT attname::text AS name, format_type(atttypid, atttypmod) AS type, attisdropped AS dropped FROM pg_attribute
      WHERE attrelid = to_regclass($1) AND attnum > 0`,
    [qualified],
  );
  return { have: new Map(rows.filter((r) => !r.dropped).map((r) => [r.name, r.type])), slots: rows.length };
}

function plan(have: Map<string, string>, fields: readonly EventColumn[]): TablePlan {
  const columns: EventColumn[] = [];
  const extra: EventColumn[] = [];
  for (const f of fields) (have.get(f.name) !== undefined && !ADDED_COLUMNS.includes(f.name) ? columns : extra).push(f);
  return { columns, extra, idKey: have.has('id_key') };
}

/**
 * Make sure `table` can take the file's fields and say where each goes. `tx` is the file's own
 * transaction: a new table is created there, so it disappears if the file fails.
 */
export async function ensureEventTable(db: Database, tx: Connection, schema: string, table: string, fields: readonly EventColumn[]): Promise<TablePlan> {
  const qualified = `${escapeIdentifier(schema)}.${escapeIdentifier(table)}`;
  const cached = known.get(qualified);
  if (cached && cached.has('extra_fields') && fields.every((f) => !fits(f) || cached.has(f.name))) return checkTypes(cached, fields, schema, table);

  const lock = lockKey(schema, `currents-table:${table}`);
  let current = await columnsOf(tx, qualified);
  if (current.have.size === 0) {
    // Held until the file commits: a second file of the type waits, then finds the table.
    await lockForTransaction(tx, lock, 2);
    current = await columnsOf(tx, qualified);
    if (current.have.size === 0) {
      const own: EventColumn[] = [];
      let bytes = 64; // braze-bridge's own columns
      for (const f of fields.filter(fits)) {
        if (own.length >= MAX_COLUMNS - 6 || bytes + widthOf(f.pgType) > MAX_ROW_BYTES) break;
        own.push(f);
        bytes += widthOf(f.pgType);
      }
      const defs = own.map((c) => `${escapeIdentifier(c.name)} ${c.pgType}${c.name === 'id' ? ' NOT NULL' : ''}`);
      await tx.query(
        `CREATE TABLE ${qualified} (${defs.join(', ')}, extra_fields jsonb, occurred_at timestamptz, source_key text NOT NULL, loaded_at timestamptz NOT NULL DEFAULT now(),
           id_key text GENERATED ALWAYS AS (${idKeySql('id')}) STORED PRIMARY KEY)`,
      );
      // Named by PostgreSQL: a name made from the table's first characters could collide.
      await tx.query(`CREATE INDEX ON ${qualified} (occurred_at)`);
      const have = new Map(own.map((c) => [c.name, c.pgType as string]));
      for (const c of ['extra_fields', 'occurred_at', 'source_key', 'loaded_at', 'id_key']) have.set(c, '');
      return plan(have, fields); // not cached: the CREATE is undone if this file fails
    }
  }
  const missing = fields.filter((f) => fits(f) && !current.have.has(f.name));
  if (missing.length > 0 || !current.have.has('extra_fields')) {
    current = await db.withTransaction(async (ddl) => {
      await lockForTransaction(ddl, lock, 2);
      const now = await columnsOf(ddl, qualified);
      let slots = now.slots;
      let bytes = [...now.have.values()].reduce((sum, type) => sum + widthOf(type), 64);
      if (!now.have.has('extra_fields')) {
        await ddl.query(`ALTER TABLE ${qualified} ADD COLUMN extra_fields jsonb`);
        now.have.set('extra_fields', 'jsonb');
        slots++;
      }
      for (const c of missing) {
        if (now.have.has(c.name) || slots >= MAX_COLUMNS || bytes + widthOf(c.pgType) > MAX_ROW_BYTES) continue;
        await ddl.query(`ALTER TABLE ${qualified} ADD COLUMN ${escapeIdentifier(c.name)} ${c.pgType}`);
        now.have.set(c.name, c.pgType);
        slots++;
        bytes += widthOf(c.pgType);
      }
      return now;
    });
  }
  known.set(qualified, current.have);
  return checkTypes(current.have, fields, schema, table);
}

const fits = (f: EventColumn) => FIELD.test(f.name) && !ADDED_COLUMNS.includes(f.name);

function checkTypes(have: Map<string, string>, fields: readonly EventColumn[], schema: string, table: string): TablePlan {
  for (const f of fields) {
    const current = have.get(f.name);
    if (current !== undefined && fits(f) && current !== f.pgType) {
      throw new SchemaMismatchError(`field "${f.name}" is ${f.pgType} in this file but ${current} in table ${schema}.${table}; the file is not loaded`);
    }
  }
  return plan(have, fields);
}

/**
 * A table from before migration 0006 keeps its primary key on `id`, and a btree entry holds
 * about 2.7 kB: a file with a longer id would fail there on every retry. So when such a file
 * arrives, the table is given id_key and the key moves to it, in the file's own transaction:
 * if the file fails, the table is as it was. The ALTER rewrites the table once, under an
 * exclusive lock (readers such as a forward run wait, and make this load wait). Ids up to
 * 1,000 bytes are their own key, so existing rows and later duplicates keep matching.
 */
export async function addIdKey(tx: Connection, schema: string, table: string): Promise<void> {
  const qualified = `${escapeIdentifier(schema)}.${escapeIdentifier(table)}`;
  // The lock of the table's DDL: a concurrent file that also needs the key waits, then finds it.
  await lockForTransaction(tx, lockKey(schema, `currents-table:${table}`), 2);
  if ((await columnsOf(tx, qualified)).have.has('id_key')) return;
  const { rows } = await tx.query<{ name: string; columns: string[] }>(
    `SELECT c.conname::text AS name, ARRAY(SELECT a.attname::text FROM pg_attribute a WHERE a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey)) AS columns
       FROM pg_constraint c WHERE c.conrelid = to_regclass($1) AND c.contype = 'p'`,
    [qualified],
  );
  const key = rows[0];
  if (!key || key.columns.length !== 1 || key.columns[0] !== 'id') {
    throw new SchemaMismatchError(
      `table ${schema}.${table} has no primary key on id alone${key ? ` (it is on ${key.columns.join(', ')})` : ''}, so ids longer than ${OWN_KEY_BYTES.toLocaleString('en-US')} bytes cannot be given an id_key; see "Existing installs" in the README`,
    );
  }
  await tx.query(`ALTER TABLE ${qualified} ADD COLUMN id_key text GENERATED ALWAYS AS (${idKeySql('id')}) STORED`);
  await tx.query(`ALTER TABLE ${qualified} ALTER COLUMN id SET NOT NULL, DROP CONSTRAINT ${escapeIdentifier(key.name)}, ADD PRIMARY KEY (id_key)`);
  // Whether this commits or not, the cached columns may now be wrong: read them again next time.
  known.delete(qualified);
}

/** The target schema, created once behind a lock: concurrent CREATE SCHEMA IF NOT EXISTS can collide. */
export async function ensureEventSchema(db: Database, schema: string): Promise<void> {
  await db.withTransaction(async (tx) => {
    await lockForTransaction(tx, lockKey(schema, 'currents-schema'), 2);
    await tx.query(`CREATE SCHEMA IF NOT EXISTS ${escapeIdentifier(schema)}`);
  });
}
