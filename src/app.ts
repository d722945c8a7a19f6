/**
 * The composition root: builds the database, the Braze client and the logger from a Config,
 * by hand, in one place. Commands call these and close what they open in `finally`.
 */
import { requireBraze, type Config } from './config/load-config.js';
import { secretsOf } from './config/secrets.js';
import { startEmbeddedPostgres } from './db/embedded.js';
import { migrate, requireCurrentSchema } from './db/migrate.js';
import { createDatabase, type Database } from './db/pool.js';
import { createLogger, type Logger } from './log.js';
import { RateLimiter } from './http/rate-limiter.js';
import { TrackClient } from './braze/track-client.js';
import { ExportClient } from './braze/export-client.js';
import { installShutdown } from './run/shutdown.js';

export const EMBEDDED_DATABASE = 'braze_bridge';

export interface OpenDatabase {
  db: Database;
  close(): Promise<void>;
}

/** The one logger factory: every command's logger scrubs every secret the configuration holds. */
export function createAppLogger(config: Pick<Config, 'logLevel'> & Parameters<typeof secretsOf>[0]): Logger {
  return createLogger({ level: config.logLevel, secrets: secretsOf(config) });
}

/** Connect to the configured database, starting the embedded one when none is configured. */
export async function openDatabase(config: Config, log: Logger, options: { database?: string; poolSize?: number } = {}): Promise<OpenDatabase> {
  const max = options.poolSize ?? config.concurrency + 3;
  if (!config.embedded) {
    const db = createDatabase({ connectionString: config.databaseUrl, max, connectTimeoutMs: config.connectTimeoutMs });
    return { db, close: () => db.end() };
  }
  const server = await startEmbeddedPostgres({ dir: config.embeddedDir, log });
  const database = options.database ?? EMBEDDED_DATABASE;
  await server.ensureDatabase(database);
  log.debug('using the embedded PostgreSQL', { port: server.port, database });
  const db = createDatabase({ connectionString: server.url(database), max });
  return {
    db,
    close: async () => {
      await db.end();
      await server.stop();
    },
  };
}

export async function openMigrated(config: Config, log: Logger, options: { poolSize?: number } = {}): Promise<OpenDatabase> {
  const open = await openDatabase(config, log, options);
  try {
    await migrate(open.db, config.stateSchema, log);
    return open;
  } catch (error) {
    await open.close();
    throw error;
  }
}

/** For read-only commands: connect and check the state schema is current; create nothing. */
export async function openCurrent(config: Config, log: Logger, options: { poolSize?: number } = {}): Promise<OpenDatabase> {
  const open = await openDatabase(config, log, { poolSize: options.poolSize ?? 2 });
  try {
    await requireCurrentSchema(open.db, config.stateSchema);
    return open;
  } catch (error) {
    await open.close();
    throw error;
  }
}

/** The /users/export/ids client, with its own rate limit (--export-rate-limit per minute). */
export function createExportClient(config: Config, log: Logger): ExportClient {
  const { endpoint, apiKey } = requireBraze(config);
  return new ExportClient({
    endpoint,
    apiKey,
    rateLimiter: new RateLimiter({ limit: config.exportRateLimit, windowMs: 60_000, reserve: 1, log }),
    timeoutMs: config.requestTimeoutMs,
    maxAttempts: config.maxAttempts,
    log,
  });
}

export function createTrackClient(config: Config, log: Logger): TrackClient {
  const { endpoint, apiKey } = requireBraze(config);
  return new TrackClient({
    endpoint,
    apiKey,
    rateLimiter: new RateLimiter({ ...config.rateLimit, reserve: config.concurrency, log }),
    timeoutMs: config.requestTimeoutMs,
    maxAttempts: config.maxAttempts,
    log,
  });
}

/**
 * Run a command's body with graceful shutdown installed: `fn` gets the stop signal; the exit
 * code becomes 130/143 when a signal stopped the run.
 */
export async function withShutdown<T extends { exitCode: number }>(config: Config, log: Logger, fn: (stop: AbortSignal) => Promise<T>): Promise<T> {
  const shutdown = installShutdown(log, config.shutdownTimeoutMs);
  try {
    const result = await fn(shutdown.signal);
    if (shutdown.exitCode !== undefined) result.exitCode = shutdown.exitCode;
    return result;
  } finally {
    shutdown.dispose();
  }
}
