/**
 * Group commit for delivery: what Braze answered is recorded in few transactions rather than one
 * per batch. Confirmed members (their `seq` in bb_delta) and the members Braze refused collect
 * here and are written together, in one transaction on the planning connection, once
 * `maxMembers` have collected or `maxDelayMs` after the oldest, and always before delivery
 * returns. Nothing is recorded before Braze confirmed it. A kill -9 leaves unrecorded what
 * collected since the last write (normally the last maxDelayMs of answers), and never more than
 * two groups plus the deltas already read (two reads of about 450, see delta-batches.ts) and
 * the batches in flight: the batch that fills a group waits until it is written, and no further
 * deltas are read while two groups wait to be written. Those members are sent again by the next
 * run, as the requests in flight are.
 */
import type { Connection } from '../db/pool.js';
import { DatabaseError, messageOf } from '../errors.js';
import { recordFailures, type MemberFailure } from '../run/run-store.js';
import { advanceSnapshot, type AdvanceOptions } from './snapshot-store.js';

export interface RecorderOptions extends AdvanceOptions {
  schema: string;
  audience: string;
  runId: number | null;
  maxMembers: number;
  maxDelayMs: number;
}

export interface Recorder {
  /**
   * Collect one batch's answer. Resolves at once, or, when this batch fills the group, once the
   * group is written (so a delivery that outruns the database waits instead of piling up).
   */
  add(confirmed: readonly string[], failures: readonly MemberFailure[]): Promise<void>;
  /** Write whatever has collected; rejects with the first write error, if any. */
  flush(): Promise<void>;
  /**
   * Undefined when the next read of deltas may be issued now (issue it synchronously, in the
   * same tick); otherwise a promise to wait for before asking again: while a group's transaction
   * is open on the connection (a read must not run inside it), or while two groups wait to be
   * written (delivery then waits for the database: that bounds the unrecorded answers).
   */
  readable(): Promise<void> | undefined;
}

export function createRecorder(conn: Connection, options: RecorderOptions): Recorder {
  let seqs: string[] = [];
  let failures: MemberFailure[] = [];
  let timer: NodeJS.Timeout | undefined;
  let chain: Promise<void> = Promise.resolve();
  let error: unknown;

  let backlog = 0;
  let inTransaction = false;

  /**
   * One statement when Braze refused nobody (the common case: autocommit, nothing open between
   * statements); with refusals, snapshot and failures in one transaction, since both say what
   * Braze answered.
   */
  const write = async (group: string[], refused: MemberFailure[]) => {
    try {
      if (refused.length === 0 || !options.runId) {
        await advanceSnapshot(conn, options.schema, options.audience, options.runId, group, options);
      } else {
        inTransaction = true;
        await conn.query('BEGIN');
        try {
          await advanceSnapshot(conn, options.schema, options.audience, options.runId, group, options);
          await recordFailures(conn, options.schema, options.runId, options.audience, refused);
          await conn.query('COMMIT');
        } catch (e) {
          await conn.query('ROLLBACK').catch(() => {});
          throw e;
        } finally {
          inTransaction = false;
        }
      }
    } catch (e) {
      const code = e instanceof DatabaseError ? e.code : undefined;
      throw new DatabaseError(
        `recording what Braze confirmed failed (${messageOf(e)}): delivery stops; the ${group.length} members of the unrecorded group and those confirmed after it are sent again next run`,
        code,
        undefined,
        { cause: e },
      );
    }
  };

  /** Hand the collected answers to the write chain; writes run one after another on the connection. */
  const cut = (): Promise<void> => {
    if (timer) clearTimeout(timer);
    timer = undefined;
    if (seqs.length + failures.length === 0) return chain;
    const [group, refused] = [seqs, failures];
    [seqs, failures] = [[], []];
    backlog++;
    chain = chain
      .then(() => (error ? undefined : write(group, refused)))
      .catch((e: unknown) => {
        error ??= e;
      })
      .finally(() => backlog--);
    return chain;
  };

  const rethrow = () => {
    if (error) throw error;
  };

  return {
    async add(confirmed, refused) {
      rethrow();
      seqs.push(...confirmed);
      failures.push(...refused);
      if (seqs.length + failures.length >= options.maxMembers) {
        await cut();
        rethrow();
      } else if (!timer) {
        timer = setTimeout(() => void cut(), options.maxDelayMs);
        timer.unref();
      }
    },
    async flush() {
      await cut();
      rethrow();
    },
    readable() {
      return inTransaction || backlog >= 2 ? chain : undefined;
    },
  };
}
