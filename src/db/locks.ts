/**
 * PostgreSQL advisory locks, keyed per state schema so that two schemas in one database never
 * block each other. Session locks (held by one connection until released) guard a run;
 * transaction locks guard DDL that concurrent processes could race on.
 */
import { createHash } from 'node:crypto';
import type { Queryable } from './pool.js';

/** A lock key per state schema and purpose (the first half of a two-part advisory key). */
export function lockKey(schema: string, purpose: string): number {
  return createHash('sha256').update(`braze-bridge:${purpose}:${schema}`).digest().readInt32BE(0);
}

/** Take a session lock if it is free; false when another session holds it. */
export async function tryLock(conn: Queryable, key: number, sub: number): Promise<boolean> {
  const { rows } = await conn.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1, $2) AS ok', [key, sub]);
  return rows[0]!.ok;
}

/** Wait for a session lock. */
export async function lock(conn: Queryable, key: number, sub: number): Promise<void> {
  await conn.query('SELECT pg_advisory_lock($1, $2)', [key, sub]);
}

/** Release a session lock; never throws (the session may already be gone, taking the lock with it). */
export async function unlock(conn: Queryable, key: number, sub: number): Promise<void> {
  await conn.query('SELECT pg_advisory_unlock($1, $2)', [key, sub]).catch(() => {});
}

/** Inside a transaction: a lock released at COMMIT or ROLLBACK. */
export async function lockForTransaction(tx: Queryable, key: number, sub: number): Promise<void> {
  await tx.query('SELECT pg_advisory_xact_lock($1, $2)', [key, sub]);
}

/** The backend pid holding a session lock, for messages. */
export async function lockHolder(conn: Queryable, key: number, sub: number): Promise<number | undefined> {
  const { rows } = await conn.query<{ pid: number }>(
    `SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = ($1::bigint & 4294967295)::oid AND objid = $2 AND granted LIMIT 1`,
    [key, sub],
  );
  return rows[0]?.pid;
}
