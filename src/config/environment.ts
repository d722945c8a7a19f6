/**
 * The one table of what braze-bridge reads from the environment and the defaults of its
 * flags. The loader (load-config.ts) takes its defaults from here, `--help` prints from here,
 * and a test checks that README.md and .env.example name every variable and default.
 */

/** An environment variable: name, an example value, what it is for, and whether it is a secret. */
export interface EnvironmentVariable {
  name: string;
  example: string;
  describe: string;
  secret?: boolean;
}

export const environmentVariables: readonly EnvironmentVariable[] = [
  { name: 'DATABASE_URL', example: 'postgres://user:pass@host:5432/warehouse', describe: 'the database holding the audiences and the state (libpq PG* variables also work); unset: embedded PostgreSQL', secret: true },
  { name: 'BRAZE_REST_ENDPOINT', example: 'https://rest.iad-01.braze.com', describe: "your workspace's REST endpoint" },
  { name: 'BRAZE_API_KEY', example: '(a REST API key with users.track)', describe: 'sent only over HTTPS, never logged', secret: true },
  { name: 'BRAZE_BRIDGE_AUDIENCES', example: 'sql/audiences', describe: 'default for --audiences' },
  { name: 'BRAZE_BRIDGE_STATE_SCHEMA', example: 'braze_bridge', describe: 'default for --state-schema' },
  { name: 'BRAZE_BRIDGE_EMBEDDED_DIR', example: '.braze-bridge/pg', describe: 'data folder of the embedded PostgreSQL' },
  { name: 'LOG_LEVEL', example: 'info', describe: 'debug | info | warn | error | silent' },
  { name: 'MOVABLE_INK_ENDPOINT', example: 'https://collector.movableink-dmz.com/behavioral/<key>', describe: 'forward movable-ink: the behavioural URL including the key (a secret)', secret: true },
  { name: 'MOVABLE_INK_AUTH', example: 'user:password', describe: 'forward movable-ink: the Basic credential, user:password or already base64 (a secret)', secret: true },
  { name: 'BRAZE_BRIDGE_NOTIFY_URL', example: 'https://hooks.slack.com/services/…', describe: 'default for --notify-url (a secret: never logged)', secret: true },
  { name: 'AWS_REGION', example: 'us-east-1', describe: 'Currents bucket region (credentials: the standard AWS chain, e.g. AWS_ACCESS_KEY_ID / AWS_PROFILE)' },
  { name: 'AWS_ENDPOINT_URL_S3', example: 'http://127.0.0.1:9000', describe: 'an S3-compatible endpoint (path-style addressing is then used); or --s3-endpoint' },
];

/** Defaults of the flags, in the units the flags take. */
export const DEFAULTS = {
  audiences: 'sql/audiences',
  stateSchema: 'braze_bridge',
  embeddedDir: '.braze-bridge/pg',
  targetSchema: 'braze_currents',
  batchSize: 75,
  concurrency: 4,
  rateLimit: 3000,
  rateWindowSeconds: 3,
  timeoutSeconds: 30,
  maxAttempts: 6,
  maxChangeRatio: 0.5,
  minChangeCount: 100,
  statementTimeoutSeconds: 1800,
  maxArrayLength: 25,
  keepDays: 30,
  notifyFailedRatio: 0.05,
  shutdownTimeoutSeconds: 60,
  connectTimeoutSeconds: 30,
  logLevel: 'info',
  exportRateLimit: 250,
  notifyDriftRatio: 0.01,
} as const;
