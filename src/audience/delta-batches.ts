/**
 * The planned deltas as request batches, assembled by PostgreSQL: one row per chunk of about
 * 450 members, its payloads, keys and seqs each as one text, instead of one row per member.
 * Reading a million members row by row cost the CLI more CPU than sending them (parsing six
 * fields per row, and collecting the objects); a chunk's texts are split in one call each and
 * cut into batches of `size`.
 *
 * Exits are read first, then the rest (exits go first: every exit is confirmed before an entry or
 * change is sent), in send order, in chunks of whole batches rather than through a cursor, so
 * that the same connection can record confirmed members between reads: the snapshot advances
 * from bb_delta itself (see advanceSnapshot).
 */
import type { Connection } from '../db/pool.js';
import type { Audience, IdentifierKind } from '../types.js';
import { memberGroup, SENDS } from './plan-sql.js';

export type Phase = 'exits' | 'entries';

/** One request's members, in order: index i of each list is the attribute object at index i. */
export interface DeltaBatch {
  /** Each member's place in bb_delta (bigint, as text): how the snapshot advance finds it. */
  seqs: string[];
  identifiers: IdentifierKind[];
  keys: string[];
  /** The attributes to send, each a JSON object as text straight from PostgreSQL (never re-serialised). */
  payloads: string[];
  /**
   * Which of the audience's columns each payload carries ('1' or '0' per column, MemberSql.present),
   * or null where only the payload's own keys say (a change, an exit).
   */
  marks: Array<string | null>;
}

/**
 * What delivery reads and records deltas by: an index on the rows' send order, and statistics,
 * without which the planner reads all of bb_delta for every group of confirmed members. No parameters.
 */
export const SEQ_INDEX_SQL = ['CREATE INDEX IF NOT EXISTS bb_delta_seq ON pg_temp.bb_delta (seq)', 'ANALYZE pg_temp.bb_delta'];

/**
 * The next deltas of a phase after seq $1, at most $2 of them, in send order, as one row whose
 * lists Node cuts into batches (one row per batch, numbered by a window over the chunk, cost the
 * server half as much again: 1.35 against 0.85 CPU-s per 315,000 members). The aggregates read
 * the ordered chunk in one order (none may have its own ORDER BY or FILTER), so the lists line
 * up. Payloads are separated by U+001E, which JSON text never holds unescaped; keys, which may
 * hold anything, come as a JSON array. A mark equal to $3 (every column) is sent as '' and a
 * missing one as '-', one character instead of one per column for nearly every new member.
 * Entries all carry the audience's identifier (deltaSql), exits each their own.
 */
export function deltaBatchesSql(phase: Phase): string {
  return `SELECT count(*) AS n, max(seq) AS last, string_agg(seq::text, ',') AS seqs, json_agg(member_key)::text AS keys,
       ${phase === 'exits' ? `string_agg(identifier, ',')` : 'min(identifier)'} AS identifiers,
       string_agg(payload, E'\\x1e') AS payloads,
       string_agg(CASE WHEN present = $3 THEN '' ELSE coalesce(present, '-') END, ',') AS marks
  FROM (SELECT seq, identifier, member_key, payload::text AS payload, present FROM pg_temp.bb_delta
         WHERE seq > $1 AND ${SENT_BY[phase]}
         ORDER BY seq LIMIT $2) AS chunk`;
}

/** bb_delta's rows each phase sends. */
const SENT_BY: Record<Phase, string> = {
  exits: `kind = 'exited' AND ${SENDS}`,
  entries: `kind NOT IN ('exited', 'invalid') AND ${SENDS}`,
};

/** Whether an entry to send has an email of $1 (a text array) in any case: Braze's profile of that email. */
export const ENTRY_OF_EMAILS_SQL = `SELECT EXISTS (SELECT 1 FROM pg_temp.bb_delta
  WHERE ${SENT_BY.entries} AND ${memberGroup('email', 'member_key')} IN (SELECT ${memberGroup('email', 'k')} FROM unnest($1::text[]) AS k)) AS hit`;

interface BatchRow {
  n: string;
  last: string;
  seqs: string;
  keys: string;
  identifiers: string;
  payloads: string;
  marks: string;
}

/**
 * Batches of `size` deltas of a phase in send order, read a chunk (about 450 members) at a
 * time, one chunk ahead: a group written on the shared connection does not leave the requests
 * without work. `mayRead` says when a read may be issued (see Recorder.readable); `everyColumn`
 * is the mark of a payload that carries every column.
 */
export async function* readBatches(
  conn: Connection,
  size: number,
  phase: Phase,
  everyColumn: string,
  mayRead?: () => Promise<void> | undefined,
): AsyncGenerator<DeltaBatch> {
  // Six batches of 75: a chunk's payloads stay one string of about 100 KB for most audiences,
  // below what V8 allocates apart in its large-object space (chunks of 1,000 members took the
  // CLI about 2 CPU-s more per million members, mostly in garbage collection).
  const chunk = size * Math.max(1, Math.ceil(450 / size));
  const sql = deltaBatchesSql(phase);
  const read = async (after: string) => {
    for (let wait = mayRead?.(); wait; wait = mayRead?.()) await wait;
    // Issued in the same tick as the check above.
    return (await conn.query<BatchRow>(sql, [after, chunk, everyColumn])).rows[0]!;
  };
  let next: Promise<BatchRow> | undefined = read('0');
  while (next) {
    const row: BatchRow = await next;
    const members = Number(row.n);
    next = members < chunk ? undefined : read(row.last);
    // A read that fails while batches are still being sent is reported when it is awaited.
    next?.catch(() => {});
    if (members === 0) break;
    const all = splitChunk(row, members, phase, everyColumn);
    for (let i = 0; i < members; i += size) {
      const cut = <T>(list: T[]) => list.slice(i, i + size);
      yield { seqs: cut(all.seqs), keys: cut(all.keys), identifiers: cut(all.identifiers), payloads: cut(all.payloads), marks: cut(all.marks) };
    }
  }
}

/** A chunk's lists, split and checked against its member count. */
function splitChunk(row: BatchRow, n: number, phase: Phase, everyColumn: string): DeltaBatch {
  const batch: DeltaBatch = {
    seqs: row.seqs.split(','),
    keys: JSON.parse(row.keys) as string[],
    identifiers: phase === 'exits' ? (row.identifiers.split(',') as IdentifierKind[]) : Array<IdentifierKind>(n).fill(row.identifiers as IdentifierKind),
    payloads: row.payloads.split('\x1e'),
    marks: row.marks.split(',').map((m) => (m === '' ? everyColumn : m === '-' ? null : m)),
  };
  for (const list of [batch.seqs, batch.keys, batch.identifiers, batch.payloads, batch.marks]) {
    if (list.length !== n) throw new Error(`a chunk of ${n} deltas was read with ${list.length} entries in one of its lists`);
  }
  return batch;
}

/** The batch's attribute objects, as JSON text, in order (see attributeJson). */
export function attributeObjects(audience: Audience, batch: DeltaBatch): string[] {
  return batch.payloads.map((payload, i) => attributeJson(audience, batch.identifiers[i]!, batch.keys[i]!, payload));
}

/**
 * The attribute object for one member, as JSON text: identifier, the update-existing flag,
 * then the payload exactly as PostgreSQL wrote it. Parsing and re-serialising it in
 * JavaScript would cost more than the request itself and could alter numbers.
 */
export function attributeJson(audience: Audience, identifier: IdentifierKind, memberKey: string, payload: string): string {
  let identity: string;
  if (identifier === 'user_alias') {
    const [alias_name, alias_label] = JSON.parse(memberKey) as [string, string];
    identity = `"user_alias":${JSON.stringify({ alias_name, alias_label })}`;
  } else {
    identity = `${JSON.stringify(identifier)}:${JSON.stringify(memberKey)}`;
  }
  // payload is a non-empty JSON object: '{"a": 1, ...}'.
  return `{${identity},"_update_existing_only":${audience.updateExistingOnly === true},${payload.slice(1)}`;
}
