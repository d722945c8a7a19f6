/**
 * The settings table (src/config/environment.ts) is what the loader and --help use; the README
 * and .env.example are written by hand, so this checks they still say the same.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { DEFAULTS, environmentVariables } from '../src/config/environment.js';
import { loadConfig } from '../src/config/load-config.js';

const readme = readFileSync('README.md', 'utf8');
const envExample = readFileSync('.env.example', 'utf8');

/** The README line that documents a flag, from its options table or its prose. */
function readmeLine(flag: string): string {
  const lines = readme.split('\n');
  return lines.find((l) => l.startsWith(`| \`${flag}`)) ?? lines.find((l) => l.includes(`\`${flag}\``) && /default/.test(l)) ?? '';
}

describe('the settings table and the docs', () => {
  it('README and .env.example name every environment variable braze-bridge reads', () => {
    for (const v of environmentVariables) {
      expect(readme, v.name).toContain(v.name);
      expect(envExample, v.name).toContain(v.name);
    }
  });

  it.each([
    ['--audiences', DEFAULTS.audiences],
    ['--state-schema', DEFAULTS.stateSchema],
    ['--batch-size', String(DEFAULTS.batchSize)],
    ['--concurrency', String(DEFAULTS.concurrency)],
    ['--rate-limit', `${DEFAULTS.rateLimit} / ${DEFAULTS.rateWindowSeconds} s`],
    ['--timeout', `${DEFAULTS.timeoutSeconds} s`],
    ['--max-attempts', String(DEFAULTS.maxAttempts)],
    ['--max-change-ratio', String(DEFAULTS.maxChangeRatio)],
    ['--min-change-count', String(DEFAULTS.minChangeCount)],
    ['--statement-timeout', `${DEFAULTS.statementTimeoutSeconds} s`],
    ['--max-array-length', String(DEFAULTS.maxArrayLength)],
    ['--keep-days', `default ${DEFAULTS.keepDays}`],
    ['--notify-failed-ratio', `default ${DEFAULTS.notifyFailedRatio}`],
    ['--shutdown-timeout', `default ${DEFAULTS.shutdownTimeoutSeconds} s`],
  ])('README documents %s with its default %s', (flag, shown) => {
    expect(readmeLine(flag)).toContain(shown);
  });

  it('the loader applies the table defaults', () => {
    const c = loadConfig({}, {}, '/tmp');
    expect(c).toMatchObject({
      stateSchema: DEFAULTS.stateSchema,
      batchSize: DEFAULTS.batchSize,
      concurrency: DEFAULTS.concurrency,
      rateLimit: { limit: DEFAULTS.rateLimit, windowMs: DEFAULTS.rateWindowSeconds * 1000 },
      requestTimeoutMs: DEFAULTS.timeoutSeconds * 1000,
      maxAttempts: DEFAULTS.maxAttempts,
      maxChangeRatio: DEFAULTS.maxChangeRatio,
      minChangeCount: DEFAULTS.minChangeCount,
      keepDays: DEFAULTS.keepDays,
      notifyFailedRatio: DEFAULTS.notifyFailedRatio,
      shutdownTimeoutMs: DEFAULTS.shutdownTimeoutSeconds * 1000,
      audiencesDir: `/tmp/${DEFAULTS.audiences}`,
    });
  });
});
