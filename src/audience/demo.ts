/**
 * `demo` (what `npm start` runs): the main job end to end with nothing installed. It starts the
 * embedded PostgreSQL and the local Braze sandbox, seeds a small customer table, syncs the
 * example audiences, changes a few customers and syncs again to show that only deltas go out.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createAppLogger, createTrackClient } from '../app.js';
import { startEmbeddedPostgres } from '../db/embedded.js';
import { createDatabase } from '../db/pool.js';
import { loadConfig } from '../config/load-config.js';
import { migrate } from '../db/migrate.js';
import { runAudiences, type RunSummary } from './run-audiences.js';
import { formatSummary } from './format-summary.js';
import { packageRoot } from '../config/package-root.js';
import { BrazeSandbox } from '../braze/sandbox.js';

const DEMO_DATABASE = 'braze_bridge_demo';

export async function runDemo(options: { audiencesDir?: string; print?: (line: string) => void } = {}): Promise<RunSummary[]> {
  const print = options.print ?? ((line: string) => process.stdout.write(`${line}\n`));
  const apiKey = randomBytes(16).toString('hex');
  const sandbox = new BrazeSandbox({ apiKey });
  const endpoint = await sandbox.start();
  // The demo always uses the embedded database: it drops and seeds tables of its own.
  const config = loadConfig(
    { audiences: options.audiencesDir ?? join(packageRoot(), 'sql', 'audiences') },
    { ...process.env, DATABASE_URL: '', PGHOST: '', PGDATABASE: '', PGSERVICE: '', PGPORT: '', PGUSER: '', BRAZE_REST_ENDPOINT: endpoint, BRAZE_API_KEY: apiKey, LOG_LEVEL: process.env.LOG_LEVEL ?? 'warn' },
  );
  const log = createAppLogger(config);
  print('braze-bridge demo: embedded PostgreSQL + local Braze sandbox (nothing leaves this machine)');
  const server = await startEmbeddedPostgres({ dir: config.embeddedDir, log });
  const admin = createDatabase({ connectionString: server.url('postgres'), max: 1 });
  try {
    await admin.query(`DROP DATABASE IF EXISTS ${DEMO_DATABASE} WITH (FORCE)`);
    await admin.query(`CREATE DATABASE ${DEMO_DATABASE}`);
  } finally {
    await admin.end();
  }
  const demo = { db: createDatabase({ connectionString: server.url(DEMO_DATABASE), max: config.concurrency + 3 }) };
  const summaries: RunSummary[] = [];
  try {
    const sql = (file: string) => readFileSync(join(packageRoot(), 'sql', 'demo', file), 'utf8');
    await demo.db.query(sql('seed.sql'));
    await migrate(demo.db, config.stateSchema, log);
    const client = createTrackClient(config, log);
    const run = async (title: string) => {
      const summary = await runAudiences(
        { db: demo.db, schema: config.stateSchema, log, client },
        { dir: config.audiencesDir },
        { mode: 'sync', batchSize: config.batchSize, concurrency: config.concurrency, maxChangeRatio: config.maxChangeRatio, force: false },
      );
      print(`\n${title}`);
      print(formatSummary(summary));
      summaries.push(summary);
    };
    await run('1. First sync: every member is new, so every non-NULL attribute is sent.');
    await demo.db.query(sql('changes.sql'));
    print('\nChanged customers 3 and 6 (tier, ltv), 9 (left VIP), 10 (joined VIP), 12 (new order), 15 (preferences).');
    await run('2. Second sync: only the changed attributes go out; customer 9 has its VIP attributes unset.');
    await run('3. Third sync with nothing changed: no requests at all.');
    print('\nWhat the sandbox holds for some of those profiles:');
    for (const id of ['3', '9', '10', '15']) print(`  external_id ${id}: ${JSON.stringify(sandbox.profile({ external_id: id }))}`);
    print(`\nSandbox totals: ${sandbox.counts.requests} requests, ${[...sandbox.updatesByProfile.values()].reduce((a, b) => a + b, 0)} data points on ${sandbox.profiles.size} profiles.`);
    print('Next: point DATABASE_URL, BRAZE_REST_ENDPOINT and BRAZE_API_KEY at your own, then `npx braze-bridge plan`.');
    return summaries;
  } finally {
    await demo.db.end();
    await server.stop();
    await sandbox.stop();
  }
}

