/** Writing audience files into a temporary folder, and running them through the library. */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RateLimiter } from '../../src/http/rate-limiter.js';
import { TrackClient } from '../../src/braze/track-client.js';
import { runAudiences, type RunSummary } from '../../src/audience/run-audiences.js';
import type { SyncMode } from '../../src/audience/sync-audience.js';
import type { Database } from '../../src/db/pool.js';
import { silentLogger } from '../../src/log.js';

export function audienceDir(files: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), 'bb-audiences-'));
  writeAudiences(dir, files);
  return dir;
}

export function writeAudiences(dir: string, files: Record<string, string>): void {
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, `${name}.sql`), text);
}

export const TEST_KEY = 'test-key-0123456789abcdef';

export function testClient(endpoint: string, options: Partial<ConstructorParameters<typeof TrackClient>[0]> = {}): TrackClient {
  return new TrackClient({
    endpoint,
    apiKey: TEST_KEY,
    rateLimiter: new RateLimiter({ limit: 10_000, windowMs: 1000 }),
    backoffMs: 5,
    maxBackoffMs: 50,
    timeoutMs: 2_000,
    ...options,
  });
}

export interface RunOptions {
  mode?: SyncMode;
  names?: string[];
  client?: TrackClient;
  batchSize?: number;
  concurrency?: number;
  maxChangeRatio?: number;
  force?: boolean;
  outFile?: string;
}

export function run(db: Database, dir: string, options: RunOptions = {}): Promise<RunSummary> {
  return runAudiences(
    { db, schema: 'braze_bridge', log: silentLogger, client: options.client },
    { dir, names: options.names },
    {
      mode: options.mode ?? 'sync',
      batchSize: options.batchSize ?? 75,
      concurrency: options.concurrency ?? 4,
      maxChangeRatio: options.maxChangeRatio ?? 0.5,
      force: options.force ?? false,
      outFile: options.outFile,
    },
  );
}
