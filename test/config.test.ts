import { describe, expect, it } from 'vitest';
import { loadConfig, requireBraze } from '../src/config/load-config.js';
import { ConfigError } from '../src/errors.js';
import { createLogger } from '../src/log.js';
import { Writable } from 'node:stream';

describe('configuration', () => {
  it('flags win over the environment, which wins over defaults', () => {
    const c = loadConfig({ batchSize: 50 }, { BRAZE_BRIDGE_STATE_SCHEMA: 'bb', DATABASE_URL: 'postgres://u:p@h/db' }, '/work');
    expect(c).toMatchObject({ batchSize: 50, stateSchema: 'bb', concurrency: 4, rateLimit: { limit: 3000, windowMs: 3000 }, audiencesDir: '/work/sql/audiences', embedded: false });
    expect(Object.isFrozen(c)).toBe(true);
  });

  it('uses the embedded database only when nothing names one (PG* variables count)', () => {
    expect(loadConfig({}, {}).embedded).toBe(true);
    expect(loadConfig({}, { PGHOST: 'db' })).toMatchObject({ embedded: false, usePgEnv: true });
  });

  it('reports every problem at once', () => {
    try {
      loadConfig({ batchSize: 76, concurrency: 0, maxChangeRatio: 2, stateSchema: 'Bad-Name' }, { LOG_LEVEL: 'loud', BRAZE_REST_ENDPOINT: 'http://rest.iad-01.braze.com' });
      expect.unreachable();
    } catch (error) {
      expect(error).toBeInstanceOf(ConfigError);
      expect((error as ConfigError).problems).toHaveLength(6);
    }
  });

  it('allows plain http only on loopback', () => {
    expect(loadConfig({}, { BRAZE_REST_ENDPOINT: 'http://127.0.0.1:9999' }).brazeEndpoint).toBe('http://127.0.0.1:9999');
    expect(loadConfig({}, { BRAZE_REST_ENDPOINT: 'http://localhost:9999' }).brazeEndpoint).toBe('http://localhost:9999');
    expect(() => loadConfig({}, { BRAZE_REST_ENDPOINT: 'http://10.0.0.5' })).toThrow(/must use https/);
  });

  it('requires an endpoint and key only to send', () => {
    expect(() => requireBraze(loadConfig({}, {}))).toThrow(/BRAZE_REST_ENDPOINT is not set.*BRAZE_API_KEY is not set/);
  });

  it('the logger scrubs secrets from every line', () => {
    let out = '';
    const stream = new Writable({ write: (c, _e, cb) => ((out += c), cb()) });
    const log = createLogger({ stream, secrets: ['s3cr3t-key'] }).child({ run: 1 });
    log.info('sending with s3cr3t-key', { header: 'Bearer s3cr3t-key' });
    expect(out).not.toContain('s3cr3t-key');
    expect(JSON.parse(out)).toMatchObject({ level: 'info', run: 1, msg: 'sending with [redacted]' });
  });
});
