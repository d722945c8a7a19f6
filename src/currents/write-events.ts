/**
 * Writing one file's events into its event table, inside the file's transaction, in one of two
 * ways. Both insert each event id once, whatever the file repeats or the table already holds.
 *
 * Direct (the common case): each row is written once. Per batch, a repeat within the batch is
 * dropped in Node; the ids this process wrote to the table lately (recent-ids.ts; the file's
 * own earlier batches included) are looked up in the table's key and the ones found dropped;
 * the rest are COPYed straight into the event table. Within this process, files take turns to
 * write to a table (table-turns.ts), so a lookup sees the rows written before as committed and
 * a COPY never waits for another file. If the table held an id this process did not write
 * lately (an earlier run's, or another process's written meanwhile), the COPY fails with a
 * unique violation: that batch is rolled back to its savepoint, looked up in full, and written
 * again (counted: batchesRedone in the file's log line), and so are the file's later batches.
 * The rare rows whose occurred_at only PostgreSQL can compute go to a staging table, inserted
 * with ON CONFLICT DO NOTHING at the end. What this cannot get past is left to the caller
 * (load-file.ts): a unique violation after a full lookup (the file is loaded again staged) and
 * a deadlock (its transaction is rolled back).
 *
 * Staged (the fallback, and the path of tables from before migration 0006 given a long id):
 * every row is COPYed to a staging table, then inserted in one statement, as before this
 * module existed.
 */
import { copyFrom, escapeIdentifier, sqlLiteral, type Connection } from '../db/pool.js';
import { DatabaseError } from '../errors.js';
import { addIdKey, hasIdColumn, hasTimeColumn, idKeySql, OWN_KEY_BYTES, type TablePlan } from './event-tables.js';
import type { RecentIds } from './recent-ids.js';
import type { Turn } from './table-turns.js';
import { ahead } from './read-batches.js';
import { BATCH_SLOTS, earlierInBatch, freeSlot, idOf, linesOf, type RowBatch } from './row-batch.js';

/** Where one file's events go. */
export interface EventTarget {
  /** The file's transaction. */
  tx: Connection;
  schema: string;
  table: string;
  plan: TablePlan;
}

/** What a write did: records read, rows inserted, and rows that went through the staging table. */
export interface Written {
  records: number;
  inserted: number;
  staged: number;
  /** Batches rolled back because the table held an id the recent ids did not know, then looked up and written again. */
  redone: number;
}

/** The direct write cannot load this file; load it again with `writeStaged`. */
export class RestartStaged extends Error {}

/** Batches decoded ahead of the one being written. */
const AHEAD = 4;
/**
 * Batches of a file that may each be rolled back alone (a savepoint, one subtransaction each);
 * later batches are all looked up instead. PostgreSQL keeps 64 subtransactions per transaction
 * in shared memory; past that every other session's snapshot gets slower.
 */
const SAVEPOINTS = 32;

export async function writeDirect(target: EventTarget, batches: AsyncGenerator<RowBatch>, turn: Turn): Promise<Written> {
  const { tx, plan } = target;
  const sql = statements(target);
  const written: Written = { records: 0, inserted: 0, staged: 0, redone: 0 };
  let recent: RecentIds | undefined;
  // Until a COPY finds an id the recent ids did not know: then every id is looked up.
  let lookUpAll = false;
  let savepoints = 0;
  // Whether the last batch's savepoint is still to be released: its RELEASE goes with the next
  // batch's SAVEPOINT and lookup, one round trip for the three (the file's COMMIT releases the
  // last one).
  let open = false;

  // The batch's ids by hash (open addressing, row numbers; -1 free): repeats within a batch are
  // found here, across batches by the lookup, which sees the earlier batches' rows. A typed
  // table, because a Set of 20,000 strings per batch lands in V8's large-object space, which
  // only a full collection frees: the process grew with the file.
  const slots = new Int32Array(BATCH_SLOTS);

  /** Which rows of a batch go where: in Node only, so it runs while the batch before is written. */
  const sort = (batch: RowBatch, recent: RecentIds) => {
    const direct: number[] = [];
    const suspects: number[] = [];
    const later: number[] = [];
    slots.fill(-1);
    for (let i = 0; i < batch.rows; i++) {
      const from = batch.idFrom[i]!;
      const id = from >= 0 ? undefined : batch.ids.get(i);
      if (from < 0 && id === undefined) {
        // Not a string: the COPY refuses it, as the insert did before (NOT NULL).
        direct.push(i);
        continue;
      }
      const repeat = id === undefined ? recent.seenBeforeBytes(batch.text, from, batch.idTo[i]!) : recent.seenBefore(id);
      if (repeat && earlierInBatch(slots, batch, i, recent.lastHash)) continue; // the first copy is kept
      slots[freeSlot(slots, recent.lastHash)] = i;
      const bytes = id === undefined ? batch.idTo[i]! - from : id.length > OWN_KEY_BYTES / 3 ? Buffer.byteLength(id) : 0;
      if (!plan.idKey && bytes > OWN_KEY_BYTES) {
        // The table needs id_key first, an ALTER that must come before this file writes to it.
        throw new RestartStaged('an id longer than the key of a table from before migration 0006 can hold');
      }
      (!batch.timed[i] ? later : repeat ? suspects : direct).push(i);
    }
    return { direct, suspects, later };
  };

  const write = async (batch: RowBatch, { direct, suspects, later }: ReturnType<typeof sort>) => {
    if (lookUpAll) {
      const rows = await dropLoaded(target, batch, merge(direct, suspects), open ? 'RELEASE SAVEPOINT batch' : undefined);
      open = false;
      if (rows.length > 0) await copyFrom(tx, sql.copyDirect, linesOf(batch, rows));
      written.inserted += rows.length;
    } else {
      // The lookup covers only the ids this process wrote lately: if the table held another
      // one (an earlier run's, another process's), this batch alone is undone and looked up.
      let rows = merge(direct, await dropLoaded(target, batch, suspects, open ? 'RELEASE SAVEPOINT batch; SAVEPOINT batch' : 'SAVEPOINT batch'));
      open = true;
      if (rows.length > 0) {
        try {
          await copyFrom(tx, sql.copyDirect, linesOf(batch, rows));
        } catch (error) {
          if (!(error instanceof DatabaseError && error.code === '23505')) throw error;
          await tx.query('ROLLBACK TO SAVEPOINT batch');
          written.redone++;
          lookUpAll = true;
          rows = await dropLoaded(target, batch, rows);
          await copyFrom(tx, sql.copyDirect, linesOf(batch, rows));
        }
        if (++savepoints === SAVEPOINTS) lookUpAll = true;
        written.inserted += rows.length;
      }
    }
    if (later.length > 0) {
      if (written.staged === 0) await tx.query(sql.createStage);
      await copyFrom(tx, sql.copyStage, linesOf(batch, later));
      written.staged += later.length;
    }
    batch.done();
  };

  let writing: Promise<void> = Promise.resolve();
  try {
    // While the file waits for its turn, one batch ahead is enough.
    for await (const batch of ahead(batches, () => (recent ? AHEAD : 1))) {
      written.records += batch.rows;
      // Before any id is sorted: the lookups must see every row written before this file's.
      recent ??= await turn.take(sql.table);
      const sorted = sort(batch, recent);
      await writing;
      writing = write(batch, sorted);
      // Awaited before the next batch is written, or below; until then not "unhandled".
      writing.catch(() => {});
    }
  } catch (error) {
    // A batch may still be using the connection: it must end before the caller rolls back.
    await writing.catch(() => {});
    throw error;
  }
  await writing;
  if (written.staged > 0) {
    const { rowCount } = await tx.query(sql.insert(true));
    written.inserted += rowCount ?? 0;
    await tx.query('DROP TABLE bb_stage');
  }
  return written;
}

export async function writeStaged(target: EventTarget, batches: AsyncGenerator<RowBatch>, turn: Turn): Promise<Written> {
  const { tx, plan } = target;
  const sql = statements(target);
  const written: Written = { records: 0, inserted: 0, staged: 0, redone: 0 };
  const recent = await turn.take(sql.table);
  await tx.query(sql.createStage);
  for await (const batch of ahead(batches, () => AHEAD)) {
    for (let i = 0; i < batch.rows; i++) {
      if (batch.idFrom[i]! >= 0) recent.seenBeforeBytes(batch.text, batch.idFrom[i]!, batch.idTo[i]!);
      else if (batch.ids.has(i)) recent.seenBefore(batch.ids.get(i)!);
    }
    await copyFrom(tx, sql.copyStage, [batch.text]);
    written.records += batch.rows;
    batch.done();
  }
  written.staged = written.records;
  if (!plan.idKey && hasIdColumn(plan)) {
    const long = await tx.query(`SELECT 1 FROM bb_stage WHERE octet_length(id) > ${OWN_KEY_BYTES} LIMIT 1`);
    if (long.rowCount) await addIdKey(tx, target.schema, target.table);
  }
  // Most files hold only new events: a plain INSERT is about twice as fast as ON CONFLICT.
  // When an id is already there (Currents delivers at least once) or repeats in the file, redo
  // it with ON CONFLICT DO NOTHING in id order, which skips them. No conflict target: the key
  // is id_key or, on a table from before 0006, id, and another process may have just moved it
  // (addIdKey), which a cached plan would not know. A deadlock is not retried here: the other
  // session waits for this whole transaction (load-file.ts).
  await tx.query('SAVEPOINT insert_events');
  try {
    written.inserted = (await tx.query(sql.insert(false))).rowCount ?? 0;
  } catch (error) {
    if (!(error instanceof DatabaseError && error.code === '23505')) throw error;
    await tx.query('ROLLBACK TO SAVEPOINT insert_events');
    written.inserted = (await tx.query(sql.insert(true))).rowCount ?? 0;
  }
  await tx.query('DROP TABLE bb_stage');
  return written;
}

/**
 * Of the rows `picked`, those whose id the table does not hold yet. The ids go as one array
 * whose key lookup the planner cannot size (ARRAY(SELECT …)), so it always probes the key's
 * index rather than scanning the table for a large batch; long ids are keyed as id_key is.
 */
async function dropLoaded(target: EventTarget, batch: RowBatch, picked: number[], before?: string): Promise<number[]> {
  const all = picked.map((i) => idOf(batch, i));
  const ids = all.filter((id): id is string => id !== undefined);
  // With nothing to look up, the statements that were to go with the lookup go alone.
  if (ids.length === 0) {
    if (before) await target.tx.query(before);
    return picked;
  }
  // A few ids go as one literal, in one message with `before` (the simple protocol, which allows
  // several statements; the session's text is UTF-8, pool.ts); many, long ones or one holding
  // a NUL (which cannot be sent as text) go as a parameter, after it.
  const inline = before !== undefined && ids.length <= INLINE_IDS && ids.reduce((n, id) => n + id.length, 0) <= INLINE_CHARS && !ids.some((id) => id.includes('\0'));
  if (before && !inline) await target.tx.query(before);
  // An array literal, whatever the count: one entry in pg_stat_statements, not one per length.
  const list = inline ? `${sqlLiteral(`{${ids.map((id) => `"${id.replace(/["\\]/g, '\\$&')}"`).join(',')}}`)}::text[]` : '$1::text[]';
  const match = target.plan.idKey ? `id_key = ANY (ARRAY(SELECT ${idKeySql('x')} FROM unnest(${list}) AS x))` : `id = ANY (ARRAY(SELECT unnest(${list})))`;
  const lookup = `SELECT id FROM ${qualified(target)} WHERE ${match}`;
  // Several statements in one message answer with a result each; the lookup's is the last.
  const answer = (inline ? await target.tx.query(`${before}; ${lookup}`) : await target.tx.query<{ id: string }>(lookup, [ids])) as unknown;
  const { rows } = (Array.isArray(answer) ? answer.at(-1) : answer) as { rows: Array<{ id: string }> };
  if (rows.length === 0) return picked;
  const loaded = new Set(rows.map((r) => r.id));
  return picked.filter((_, k) => {
    const id = all[k];
    return id === undefined || !loaded.has(id);
  });
}

/** Ids looked up as literals at most (dropLoaded), and their characters: a batch's few suspects, not a statement of megabytes. */
const INLINE_IDS = 1000;
const INLINE_CHARS = 64 * 1024;

/** The union of two ascending lists of row numbers, ascending. */
function merge(a: number[], b: number[]): number[] {
  if (b.length === 0) return a;
  if (a.length === 0) return b;
  const out: number[] = [];
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) out.push(j >= b.length || (i < a.length && a[i]! < b[j]!) ? a[i++]! : b[j++]!);
  return out;
}

const qualified = (t: EventTarget) => `${escapeIdentifier(t.schema)}.${escapeIdentifier(t.table)}`;

/**
 * The statements of one file's write, in the columns of read-batches.ts's lines. The staging
 * table lives until the file's transaction ends; its insert computes occurred_at where the
 * line could not (coalesce: the line's value is to_timestamp("time") wherever it has one).
 */
function statements(target: EventTarget) {
  const { columns, extra } = target.plan;
  const names = [...columns.map((c) => escapeIdentifier(c.name)), ...(extra.length > 0 ? ['extra_fields'] : []), 'occurred_at', 'source_key'].join(', ');
  const defs = [...columns.map((c) => `${escapeIdentifier(c.name)} ${c.pgType}`), ...(extra.length > 0 ? ['extra_fields jsonb'] : []), 'occurred_at timestamptz', 'source_key text'].join(', ');
  const hasTime = hasTimeColumn(target.plan);
  const values = names.replace(/occurred_at, source_key$/, `${hasTime ? 'coalesce(occurred_at, to_timestamp("time"))' : 'occurred_at'}, source_key`);
  return {
    table: qualified(target),
    copyDirect: `COPY ${qualified(target)} (${names}) FROM STDIN`,
    createStage: `CREATE TEMP TABLE bb_stage (${defs}) ON COMMIT DROP`,
    copyStage: `COPY bb_stage (${names}) FROM STDIN`,
    insert: (dedupe: boolean) => `INSERT INTO ${qualified(target)} (${names}) SELECT ${values} FROM bb_stage${dedupe ? ' ORDER BY id ON CONFLICT DO NOTHING' : ''}`,
  };
}
