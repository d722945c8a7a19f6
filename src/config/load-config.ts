/**
 * The only reader of process.env. Flags win over the environment, which wins over defaults;
 * everything is validated together so a user sees every problem at once, and the result is
 * frozen. Secrets (the API key, the database password) live only here and in the clients.
 */
import { existsSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { parseHour } from '../currents/parse-key.js';
import { ConfigError } from '../errors.js';
import type { LogLevel } from '../log.js';
import { DEFAULTS } from './environment.js';

export interface Config {
  /** A libpq URL; undefined with `usePgEnv` (PG* variables) or `embedded`. */
  databaseUrl?: string;
  usePgEnv: boolean;
  /** No database configured: run the embedded PostgreSQL. */
  embedded: boolean;
  embeddedDir: string;
  brazeEndpoint?: string;
  brazeApiKey?: string;
  audiencesDir: string;
  stateSchema: string;
  batchSize: number;
  concurrency: number;
  rateLimit: { limit: number; windowMs: number };
  requestTimeoutMs: number;
  maxAttempts: number;
  maxChangeRatio: number;
  /** The guardrail applies only from this many exits plus value changes. */
  minChangeCount: number;
  force: boolean;
  /** Take over an audience last synced from another path. */
  adopt: boolean;
  /** How long an audience's query may run. */
  statementTimeoutMs: number;
  /** Items an array attribute may hold (Braze keeps 25 unless raised, up to 100). */
  maxArrayLength: number;
  dryRun: boolean;
  json: boolean;
  out?: string;
  logLevel: LogLevel;
  /** Run history and failure rows older than this are pruned. */
  keepDays: number;
  metricsFile?: string;
  /** A webhook (e.g. a Slack incoming webhook) for runs that need a person. A secret. */
  notifyUrl?: string;
  notifyFailedRatio: number;
  shutdownTimeoutMs: number;
  /** How long to wait for a PostgreSQL connection (also bounds a stuck login). */
  connectTimeoutMs: number;
  /** forward movable-ink: the behavioural URL including its key (a secret). */
  movableInkEndpoint?: string;
  /** forward movable-ink: `user:password` or its base64 (a secret). */
  movableInkAuth?: string;
  /** The libpq password variable, kept only to scrub it from output. */
  pgPassword?: string;
  /** verify: POST /users/export/ids requests per minute. */
  exportRateLimit: number;
  /** verify: notify when drifted members / members checked exceeds this. */
  notifyDriftRatio: number;
}

/** Flags as yargs hands them over (camel-cased); unknown flags are rejected by yargs. */
export interface Flags {
  audiences?: string;
  stateSchema?: string;
  batchSize?: number;
  concurrency?: number;
  rateLimit?: number;
  rateWindow?: number;
  timeout?: number;
  maxAttempts?: number;
  maxChangeRatio?: number;
  minChangeCount?: number;
  force?: boolean;
  adopt?: boolean;
  statementTimeout?: number;
  maxArrayLength?: number;
  dryRun?: boolean;
  json?: boolean;
  out?: string;
  databaseUrl?: string;
  keepDays?: number;
  metricsFile?: string;
  notifyUrl?: string;
  notifyFailedRatio?: number;
  shutdownTimeout?: number;
  connectTimeout?: number;
  exportRateLimit?: number;
  notifyDriftRatio?: number;
}


const SCHEMA = /^[a-z_][a-z0-9_]{0,62}$/;
const LOOPBACK = new Set(['localhost', '127.0.0.1', '[::1]', '::1']);

export function loadConfig(flags: Flags, env: NodeJS.ProcessEnv = process.env, cwd = process.cwd()): Readonly<Config> {
  const problems: string[] = [];
  const num = (name: string, value: number | string | undefined, fallback: number, min: number, max: number, integer = true): number => {
    if (value === undefined || value === '') return fallback;
    const n = Number(value);
    if (!Number.isFinite(n) || (integer && !Number.isInteger(n)) || n < min || n > max) {
      problems.push(`${name} must be ${integer ? 'a whole number' : 'a number'} from ${min} to ${max}; got ${value}`);
      return fallback;
    }
    return n;
  };

  const databaseUrl = flags.databaseUrl ?? (env.DATABASE_URL || undefined);
  const usePgEnv = !databaseUrl && Boolean(env.PGHOST || env.PGDATABASE || env.PGSERVICE || env.PGPORT || env.PGUSER);
  if (databaseUrl && !/^postgres(ql)?:\/\//.test(databaseUrl)) problems.push('DATABASE_URL must start with postgres:// or postgresql://');

  const stateSchema = flags.stateSchema ?? env.BRAZE_BRIDGE_STATE_SCHEMA ?? DEFAULTS.stateSchema;
  if (!SCHEMA.test(stateSchema)) problems.push(`--state-schema must be a lower-case SQL name (letters, digits, _); got "${stateSchema}"`);

  const brazeEndpoint = env.BRAZE_REST_ENDPOINT?.trim() || undefined;
  if (brazeEndpoint) {
    let url: URL | undefined;
    try {
      url = new URL(brazeEndpoint);
    } catch {
      problems.push(`BRAZE_REST_ENDPOINT is not a URL; expected e.g. https://rest.iad-01.braze.com`);
    }
    if (url && url.protocol !== 'https:' && !(url.protocol === 'http:' && LOOPBACK.has(url.hostname))) {
      problems.push(`BRAZE_REST_ENDPOINT must use https:// (the API key would travel in clear text); plain http:// is allowed only on loopback for the sandbox`);
    }
  }

  const ratio = num('--max-change-ratio', flags.maxChangeRatio, DEFAULTS.maxChangeRatio, 0, 1, false);
  const config: Config = {
    databaseUrl,
    usePgEnv,
    embedded: !databaseUrl && !usePgEnv,
    embeddedDir: resolve(cwd, env.BRAZE_BRIDGE_EMBEDDED_DIR || DEFAULTS.embeddedDir),
    brazeEndpoint,
    brazeApiKey: env.BRAZE_API_KEY?.trim() || undefined,
    audiencesDir: absolute(cwd, flags.audiences ?? env.BRAZE_BRIDGE_AUDIENCES ?? DEFAULTS.audiences),
    stateSchema,
    batchSize: num('--batch-size', flags.batchSize, DEFAULTS.batchSize, 1, 75),
    concurrency: num('--concurrency', flags.concurrency, DEFAULTS.concurrency, 1, 64),
    rateLimit: { limit: num('--rate-limit', flags.rateLimit, DEFAULTS.rateLimit, 1, 1_000_000), windowMs: num('--rate-window', flags.rateWindow, DEFAULTS.rateWindowSeconds, 0.001, 86_400, false) * 1000 },
    requestTimeoutMs: num('--timeout', flags.timeout, DEFAULTS.timeoutSeconds, 1, 600, false) * 1000,
    maxAttempts: num('--max-attempts', flags.maxAttempts, DEFAULTS.maxAttempts, 1, 20),
    maxChangeRatio: ratio,
    minChangeCount: num('--min-change-count', flags.minChangeCount, DEFAULTS.minChangeCount, 0, 1_000_000_000),
    force: flags.force ?? false,
    adopt: flags.adopt ?? false,
    statementTimeoutMs: num('--statement-timeout', flags.statementTimeout, DEFAULTS.statementTimeoutSeconds, 1, 86_400, false) * 1000,
    maxArrayLength: num('--max-array-length', flags.maxArrayLength, DEFAULTS.maxArrayLength, 1, 100),
    dryRun: flags.dryRun ?? false,
    json: flags.json ?? false,
    out: flags.out ? absolute(cwd, flags.out) : undefined,
    logLevel: parseLevel(env.LOG_LEVEL, problems),
    keepDays: num('--keep-days', flags.keepDays, DEFAULTS.keepDays, 1, 3650),
    metricsFile: flags.metricsFile ? absolute(cwd, flags.metricsFile) : undefined,
    notifyUrl: flags.notifyUrl ?? (env.BRAZE_BRIDGE_NOTIFY_URL || undefined),
    notifyFailedRatio: num('--notify-failed-ratio', flags.notifyFailedRatio, DEFAULTS.notifyFailedRatio, 0, 1, false),
    shutdownTimeoutMs: num('--shutdown-timeout', flags.shutdownTimeout, DEFAULTS.shutdownTimeoutSeconds, 1, 3600, false) * 1000,
    connectTimeoutMs: num('--connect-timeout', flags.connectTimeout, DEFAULTS.connectTimeoutSeconds, 1, 3600, false) * 1000,
    movableInkEndpoint: env.MOVABLE_INK_ENDPOINT?.trim() || undefined,
    movableInkAuth: env.MOVABLE_INK_AUTH?.trim() || undefined,
    pgPassword: env.PGPASSWORD || undefined,
    exportRateLimit: num('--export-rate-limit', flags.exportRateLimit, DEFAULTS.exportRateLimit, 1, 100_000),
    notifyDriftRatio: num('--notify-drift-ratio', flags.notifyDriftRatio, DEFAULTS.notifyDriftRatio, 0, 1, false),
  };
  if (config.notifyUrl && !/^https?:\/\//.test(config.notifyUrl)) problems.push('--notify-url must be an http(s) URL');
  if (config.out && !existsSync(dirname(config.out))) problems.push(`--out: the folder ${dirname(config.out)} does not exist`);
  if (problems.length > 0) throw new ConfigError(problems);
  return Object.freeze(config);
}

/** Sending needs an endpoint and a key; planning does not. */
export function requireBraze(config: Config): { endpoint: string; apiKey: string } {
  const missing = [
    !config.brazeEndpoint && 'BRAZE_REST_ENDPOINT is not set (e.g. https://rest.iad-01.braze.com)',
    !config.brazeApiKey && 'BRAZE_API_KEY is not set (a REST API key with the users.track permission)',
  ].filter((p): p is string => Boolean(p));
  if (missing.length > 0) throw new ConfigError([...missing, 'or use --dry-run / plan to see what would be sent without sending']);
  return { endpoint: config.brazeEndpoint!, apiKey: config.brazeApiKey! };
}

function parseLevel(value: string | undefined, problems: string[]): LogLevel {
  const v = (value ?? DEFAULTS.logLevel).toLowerCase();
  if (['debug', 'info', 'warn', 'error', 'silent'].includes(v)) return v as LogLevel;
  problems.push(`LOG_LEVEL must be debug, info, warn, error or silent; got "${value}"`);
  return 'info';
}

function absolute(cwd: string, p: string): string {
  return isAbsolute(p) ? p : resolve(cwd, p);
}

/** Settings of `currents ingest` and `currents status`. */
export interface CurrentsConfig extends Config {
  source?: string;
  s3Endpoint?: string;
  region?: string;
  targetSchema: string;
  eventTypes: string[];
  since?: Date;
  until?: Date;
  retryFailed: boolean;
  /** schedule: verify a sample of members every this many minutes (--verify-every). */
  verifyEveryMinutes?: number;
  /** schedule: members per verify run (--verify-sample). */
  verifySample: number;
}

export interface CurrentsFlags extends Flags {
  verifyEvery?: string | number;
  verifySample?: number;
  source?: string;
  s3Endpoint?: string;
  targetSchema?: string;
  eventTypes?: string;
  since?: string;
  until?: string;
  retryFailed?: boolean;
}

export function loadCurrentsConfig(flags: CurrentsFlags, env: NodeJS.ProcessEnv = process.env, cwd = process.cwd()): Readonly<CurrentsConfig> {
  const problems: string[] = [];
  let base: Readonly<Config> | undefined;
  try {
    base = loadConfig(flags, env, cwd);
  } catch (error) {
    if (error instanceof ConfigError) problems.push(...error.problems);
    else throw error;
  }
  const targetSchema = flags.targetSchema ?? DEFAULTS.targetSchema;
  if (!SCHEMA.test(targetSchema)) problems.push(`--target-schema must be a lower-case SQL name; got "${targetSchema}"`);
  const eventTypes = (flags.eventTypes ?? '').split(',').map((t) => t.trim()).filter(Boolean);
  for (const t of eventTypes) if (!/^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)*$/.test(t)) problems.push(`--event-types: "${t}" is not an event type such as users.messages.email.Send`);
  const hour = (name: string, value: string | undefined, endOfDay: boolean): Date | undefined => {
    if (!value) return undefined;
    const parsed = parseHour(value, true);
    if (typeof parsed === 'string') {
      problems.push(`${name} must be YYYY-MM-DD or YYYY-MM-DD-HH (UTC, the date= hour of the keys); got "${value}": ${parsed}`);
      return undefined;
    }
    if (value.length === 10 && endOfDay) parsed.setUTCHours(23);
    return parsed;
  };
  const since = hour('--since', flags.since, false);
  const until = hour('--until', flags.until, true);
  if (since && until && since > until) problems.push(`--since ${flags.since} is after --until ${flags.until}: no hour would be loaded`);
  const verifyEveryMinutes = flags.verifyEvery === undefined ? undefined : durationMinutes(String(flags.verifyEvery));
  if (flags.verifyEvery !== undefined && verifyEveryMinutes === undefined) problems.push(`--verify-every must be a duration such as 30m, 24h or 7d (minutes if no unit); got "${flags.verifyEvery}"`);
  const verifySample = flags.verifySample ?? 1000;
  if (!Number.isInteger(verifySample) || verifySample < 1) problems.push(`--verify-sample must be a whole number of members, at least 1; got ${flags.verifySample}`);
  const source = flags.source;
  if (source !== undefined && !/^(s3:\/\/[^/]+|file:\/\/\/)/.test(source)) problems.push(`--source must be s3://bucket/prefix or file:///path; got "${source}"`);
  const s3Endpoint = flags.s3Endpoint ?? (env.AWS_ENDPOINT_URL_S3 || undefined);
  const config = {
    ...(base as Config),
    source,
    s3Endpoint,
    region: env.AWS_REGION || env.AWS_DEFAULT_REGION || undefined,
    targetSchema,
    eventTypes,
    since,
    until,
    retryFailed: flags.retryFailed ?? false,
    verifyEveryMinutes,
    verifySample,
  };
  if (problems.length > 0) throw new ConfigError(problems);
  return Object.freeze(config);
}

/** Movable Ink credentials; only `forward` without --dry-run needs them. */
export function movableInkSettings(config: Pick<Config, 'movableInkEndpoint' | 'movableInkAuth'>): { endpoint: string; auth: string } {
  const missing = [
    !config.movableInkEndpoint && 'MOVABLE_INK_ENDPOINT is not set (https://collector.movableink-dmz.com/behavioral/<key>)',
    !config.movableInkAuth && 'MOVABLE_INK_AUTH is not set (user:password, or its base64)',
  ].filter((p): p is string => Boolean(p));
  if (missing.length > 0) throw new ConfigError([...missing, 'or use --dry-run to see what would be sent']);
  return { endpoint: config.movableInkEndpoint!, auth: config.movableInkAuth! };
}

/** `30s`, `30m`, `24h`, `7d`, or a number of minutes; undefined when it is none of these. */
export function durationMinutes(text: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)\s*(s|m|min|h|d)?$/.exec(text.trim());
  if (!m) return undefined;
  const minutes = Number(m[1]) * (m[2] === 's' ? 1 / 60 : m[2] === 'h' ? 60 : m[2] === 'd' ? 1440 : 1);
  return minutes * 60 >= 1 ? minutes : undefined;
}
