import { describe, expect, it } from 'vitest';
import { parseAudience, findAudienceFiles } from '../src/audience/load-audience.js';
import { AudienceError, ConfigError } from '../src/errors.js';
import { audienceDir } from './helpers/audiences.js';
import { updateExistingOnlyFor } from '../src/audience/sync-audience.js';
import type { IdentifierKind } from '../src/types.js';

const parse = (text: string) => parseAudience('vip', 'sql/audiences/vip.sql', text);

describe('audience files', () => {
  it('reads the header and keeps the SELECT with its starting line', () => {
    const a = parse(
      '-- VIP customers\n-- @identifier external_id\n-- @on_exit {"in_vip": false}\n-- @update_existing_only false\n-- @schedule */15 * * * *\n\nSELECT 1 AS external_id;\n',
    );
    expect(a).toMatchObject({
      name: 'vip',
      identifier: 'external_id',
      onExit: { kind: 'set', values: { in_vip: false } },
      updateExistingOnly: false,
      schedule: '*/15 * * * *',
      sql: 'SELECT 1 AS external_id',
      sqlLine: 7,
    });
  });

  it("defaults to on_exit unset and to Braze's own update_existing_only: false, but true for aliases and braze ids", () => {
    const plain = parse('SELECT 1 AS external_id');
    expect(plain).toMatchObject({ onExit: { kind: 'unset' } });
    expect(plain.updateExistingOnly).toBeUndefined();
    expect(['external_id', 'email', 'phone', 'user_alias', 'braze_id'].map((k) => updateExistingOnlyFor(plain, k as IdentifierKind))).toEqual([false, false, false, true, true]);
    expect(updateExistingOnlyFor(parse('-- @update_existing_only false\nSELECT 1'), 'user_alias')).toBe(false);
    expect(updateExistingOnlyFor(parse('-- @update_existing_only true\nSELECT 1'), 'external_id')).toBe(true);
    expect(parse('SELECT 1 AS external_id').identifier).toBeUndefined();
    expect(parse('-- @on_exit keep\nWITH x AS (SELECT 1) SELECT * FROM x').onExit).toEqual({ kind: 'keep' });
  });

  it.each([
    ['-- @identifer external_id\nSELECT 1', /vip\.sql:1: @identifer is not a known header key/],
    ['-- @identifier customer_id\nSELECT 1', /vip\.sql:1: @identifier must be one of external_id, braze_id, email, phone, user_alias/],
    ['-- @on_exit remove\nSELECT 1', /vip\.sql:1: @on_exit must be unset, keep, or a JSON object/],
    ['-- @on_exit {"a": }\nSELECT 1', /@on_exit is not valid JSON/],
    ['-- @update_existing_only yes\nSELECT 1', /@update_existing_only must be true or false/],
    ['-- @schedule every hour\nSELECT 1', /@schedule must be a 5-field cron expression/],
    ['-- @timezone Mars/Olympus\nSELECT 1', /@timezone must be an IANA time zone/],
    ['-- @on_exit keep\n-- @on_exit unset\nSELECT 1', /vip\.sql:2: @on_exit is given twice \(first on line 1\)/],
    ['-- just a comment\n', /no query/],
    ['-- @on_exit keep\n\nDELETE FROM customers', /vip\.sql:3: expected a SELECT, found "DELETE"/],
  ])('rejects %j', (text, message) => {
    expect(() => parse(text)).toThrow(AudienceError);
    expect(() => parse(text)).toThrow(message);
  });

  it('finds files by name and says which are missing', () => {
    const dir = audienceDir({ a: 'SELECT 1', b: 'SELECT 2' });
    expect(findAudienceFiles(dir).map((f) => f.slice(dir.length + 1))).toEqual(['a.sql', 'b.sql']);
    expect(() => findAudienceFiles(dir, ['a', 'c'])).toThrow(/audience c not found/);
    expect(() => findAudienceFiles(`${dir}/nope`)).toThrow(ConfigError);
  });
});
