/**
 * The one door to PostgreSQL: the only module that imports `pg`. Everything else takes a
 * narrow `Queryable`, so the same function runs on the pool, inside a transaction or in a test.
 */
import { pipeline } from 'node:stream/promises';
import { userInfo } from 'node:os';
import pg from 'pg';
import Cursor from 'pg-cursor';
import { from as copyFromStdin } from 'pg-copy-streams';
import { AppError, ConfigError, DatabaseError } from '../errors.js';

/** The narrow interface the rest of the code talks to. */
export interface Queryable {
  query<R extends object = Record<string, unknown>>(text: string, values?: readonly unknown[]): Promise<{ rows: R[]; rowCount: number | null }>;
}

/** A single checked-out connection: can also open cursors and COPY streams. */
export interface Connection extends Queryable {
  /** Stream the rows of `text` in chunks of `size`, holding at most one chunk in memory. */
  cursor<R extends object = Record<string, unknown>>(text: string, values?: readonly unknown[], size?: number): AsyncGenerator<R[]>;
  /** The raw client, for COPY streams (pg-copy-streams). */
  readonly raw: pg.PoolClient;
}

export interface Database extends Queryable {
  /** Run `fn` on one connection inside BEGIN/COMMIT; ROLLBACK if it throws. */
  withTransaction<T>(fn: (tx: Connection) => Promise<T>): Promise<T>;
  /** Run `fn` on one dedicated connection (session state such as advisory locks, temp tables). */
  withConnection<T>(fn: (conn: Connection) => Promise<T>): Promise<T>;
  /**
   * Column names, type OIDs and modifiers of a query's result, planned but not run (the caller
   * adds LIMIT 0), as one statement through the extended protocol (a second statement is
   * refused by the server) inside a READ ONLY transaction that is rolled back: whatever the
   * text, nothing is written, even by a function the planner evaluates. Also the server's
   * notices (e.g. an identifier truncated to 63 bytes).
   */
  describe(text: string, options?: { statementTimeoutMs?: number }): Promise<{ columns: Array<{ name: string; typeOid: number; typmod: number }>; notices: Array<{ code?: string; message: string }> }>;
  end(): Promise<void>;
}

export interface DatabaseOptions {
  /** A libpq connection string; when absent the PG* environment variables apply. */
  connectionString?: string;
  max?: number;
  applicationName?: string;
  /** Milliseconds to wait for a connection (and its login) before failing. */
  connectTimeoutMs?: number;
}

/**
 * When neither the URL nor PGUSER names a user, libpq logs in as the operating-system user.
 * node-postgres uses $USER instead, which cron and systemd often leave unset, so
 * `postgres:///db?host=/var/run/postgresql` failed where psql works. Do as libpq does.
 */
export function osUser(): string | undefined {
  try {
    return userInfo().username;
  } catch {
    return undefined;
  }
}
pg.defaults.user = osUser() ?? pg.defaults.user;

export function createDatabase(options: DatabaseOptions): Database {
  const { connectionString, userOptions } = splitOptions(options.connectionString);
  const pool = new pg.Pool({
    connectionString,
    connectionTimeoutMillis: options.connectTimeoutMs ?? 30_000,
    max: options.max ?? 10,
    application_name: options.applicationName ?? 'braze-bridge',
    // node-postgres reads and writes text as UTF-8 whatever the server's client_encoding says; so
    // must the session (and a literal braze-bridge writes is then read as written: under some
    // multi-byte encodings a backslash can be the second byte of a character).
    client_encoding: 'UTF8',
    // Every session keeps its temporary tables (a materialised audience, a Currents file being
    // staged) in memory rather than temp files: 8 MB by default. A ceiling, allocated only as
    // used, and settable only before a session's first temporary table, hence at startup.
    // An `options` parameter in DATABASE_URL (say, a statement_timeout) is kept and comes after
    // ours, so it wins where both set the same thing.
    options: ['-c temp_buffers=512MB', userOptions].filter(Boolean).join(' '),
    // Idle connections of a pool that outlives a run must not keep a CronJob pod alive.
    idleTimeoutMillis: 10_000,
  });
  // A connection that dies while idle must not crash the process; the next query reports it.
  pool.on('error', () => {});
  // Until a first connection succeeds, failing to connect is a setting to fix (exit 2); after
  // it, the server went away mid-run (exit 4).
  let connected = false;
  pool.on('connect', () => {
    connected = true;
  });

  const wrap = (client: pg.PoolClient, isLost: () => boolean): Connection => ({
    raw: client,
    query: async (text, values) => {
      try {
        return await client.query(text, values as unknown[]);
      } catch (error) {
        throw asDatabaseError(error);
      }
    },
    cursor: (text, values, size = 1000) => readCursor(client, text, values, size, isLost),
  });

  const withConnection = async <T>(fn: (conn: Connection) => Promise<T>): Promise<T> => {
    let client: pg.PoolClient;
    try {
      client = await pool.connect();
    } catch (error) {
      throw asDatabaseError(error, connected);
    }
    let broken = false;
    let lost = false;
    // A checked-out client whose socket dies between queries emits 'error' with no listener of
    // pg's own, which would crash the process; the next query on it reports the loss instead.
    const onError = () => {
      broken = true;
      lost = true;
    };
    client.on('error', onError);
    try {
      return await fn(wrap(client, () => lost));
    } catch (error) {
      // A connection whose session state is unknown (open cursor, failed COPY) is not reused.
      broken = true;
      throw error;
    } finally {
      client.off('error', onError);
      client.release(broken);
    }
  };

  return {
    query: async (text, values) => {
      try {
        return await pool.query(text, values as unknown[]);
      } catch (error) {
        throw asDatabaseError(error, connected);
      }
    },
    withConnection,
    withTransaction: (fn) => withConnection((conn) => inTransaction(conn, () => fn(conn))),
    describe: (text, options = {}) =>
      withConnection(async (conn) => {
        const notices: Array<{ code?: string; message: string }> = [];
        const onNotice = (n: { code?: string; message?: string }) => notices.push({ code: n.code, message: n.message ?? '' });
        conn.raw.on('notice', onNotice);
        await conn.query('BEGIN READ ONLY');
        try {
          if (options.statementTimeoutMs) await conn.query(`SELECT set_config('statement_timeout', $1, true)`, [String(options.statementTimeoutMs)]);
          const result = await conn.raw.query({ text, rowMode: 'array', queryMode: 'extended' } as pg.QueryConfig).catch((e: unknown) => {
            throw asDatabaseError(e);
          });
          return { columns: result.fields.map((f) => ({ name: f.name, typeOid: f.dataTypeID, typmod: f.dataTypeModifier })), notices };
        } finally {
          await conn.query('ROLLBACK').catch(() => {});
          conn.raw.off('notice', onNotice);
        }
      }),
    end: () => pool.end(),
  };
}

async function* readCursor<R>(client: pg.PoolClient, text: string, values: readonly unknown[] | undefined, size: number, isLost: () => boolean): AsyncGenerator<R[]> {
  const cursor = client.query(new Cursor<R>(text, values as unknown[]));
  try {
    for (;;) {
      let rows: R[];
      try {
        rows = await cursor.read(size);
      } catch (error) {
        throw asDatabaseError(error);
      }
      if (rows.length === 0) return;
      yield rows;
    }
  } finally {
    // Closing waits for the server's ReadyForQuery, which never comes on a connection that
    // died: then there is nothing to close, and waiting would hang the run instead of failing it.
    if (!isLost()) await cursor.close().catch(() => {});
  }
}

/**
 * `COPY … FROM STDIN` on this connection, fed from `chunks` (COPY text format, as strings or
 * UTF-8 bytes). An error in the source aborts the COPY (the server rolls the statement back).
 */
export async function copyFrom(conn: Connection, sql: string, chunks: AsyncIterable<string | Buffer> | Iterable<string | Buffer>): Promise<void> {
  const target = conn.raw.query(copyFromStdin(sql));
  try {
    // Straight from the iterable to the COPY stream, chunk by chunk: a Readable in between
    // would join the chunks it holds into one buffer, copying every byte once more.
    await pipeline(chunks, target);
  } catch (error) {
    throw asDatabaseError(error);
  }
}

/**
 * Take `options` out of a connection string: pg would otherwise let it replace the session
 * settings braze-bridge passes, instead of adding to them.
 */
function splitOptions(connectionString: string | undefined): { connectionString: string | undefined; userOptions?: string } {
  if (!connectionString || !/[?&]options=/.test(connectionString)) return { connectionString };
  try {
    const url = new URL(connectionString);
    const userOptions = url.searchParams.get('options') ?? undefined;
    url.searchParams.delete('options');
    return { connectionString: url.toString(), userOptions };
  } catch {
    return { connectionString };
  }
}

/**
 * `fn` inside BEGIN/COMMIT on `conn`; ROLLBACK if it throws. `begin` may add statements to the
 * BEGIN (the simple protocol: one message), say a SET LOCAL.
 */
export async function inTransaction<T>(conn: Connection, fn: () => Promise<T>, begin = 'BEGIN'): Promise<T> {
  await conn.query(begin);
  try {
    const result = await fn();
    await conn.query('COMMIT');
    return result;
  } catch (error) {
    await conn.query('ROLLBACK').catch(() => {});
    throw error;
  }
}

/** Quote an identifier once, the way PostgreSQL would. */
export function escapeIdentifier(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/**
 * A string as an SQL literal that means the same whatever standard_conforming_strings: an E''
 * literal with backslashes and quotes doubled (a plain '' literal loses its backslashes when
 * the setting is off, so a regular expression such as [^@\s] would quietly change).
 */
export function sqlLiteral(s: string): string {
  return `E'${s.replace(/\\/g, '\\\\').replace(/'/g, "''")}'`;
}

const networkCodes = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'ECONNRESET', 'EHOSTUNREACH', 'ENETUNREACH', 'EPIPE']);
/** SQLSTATEs that mean the login itself was refused: the user, password, database or pg_hba.conf. */
const loginCodes = new Set(['28P01', '28000', '3D000', '42501']);

/**
 * Wrap anything `pg` throws so it carries SQLSTATE and a message that says what to do.
 * `connected` says whether this pool has ever had a connection: failing to connect or log in
 * before that is configuration (exit 2, with the server's own reason); losing the connection
 * after it, in the middle of a run, is transient (exit 4, the next run continues).
 */
export function asDatabaseError(error: unknown, connected = true): AppError {
  if (error instanceof AppError) return error;
  const e = error as { code?: string; message?: string; position?: string };
  const message = e?.message ?? String(error);
  // pg says "not queryable" for a query on a client whose connection already failed.
  const network = (e?.code !== undefined && networkCodes.has(e.code)) || /^Connection terminated|connection error and is not queryable/.test(message);
  if (!connected && network) {
    return new ConfigError([`cannot connect to PostgreSQL (${e.code ?? message}): check DATABASE_URL or the PG* variables, and that the server is running`], { cause: error });
  }
  if (!connected && e?.code && loginCodes.has(e.code)) {
    return new ConfigError([`PostgreSQL refused the connection: ${message} (${e.code}); check the user, password and database in DATABASE_URL or the PG* variables`], { cause: error });
  }
  if (network || /^08|^57P0[123]$/.test(e?.code ?? '')) {
    return new DatabaseError(`lost the connection to PostgreSQL mid-run (${e.code ?? message}): this run stops; what was confirmed stays confirmed and the next run continues`, e?.code, undefined, { cause: error });
  }
  if (e?.code === '42501') {
    // A grant is missing: a person must fix it; retrying would fail the same way.
    return new ConfigError([`PostgreSQL refused a statement: ${message} (42501, insufficient privilege); grant the job role that privilege (README: "Grants for a job role")`], { cause: error });
  }
  const position = e?.position ? Number(e.position) : undefined;
  return new DatabaseError(message, e?.code, position, { cause: error });
}
