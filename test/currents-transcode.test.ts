/**
 * The two ways a record becomes COPY text give the same rows: straight from the Avro bytes
 * (transcode-records.ts, for strings, ints, longs and booleans) and record by record through
 * avsc and map-schema.ts (any other schema). The same hostile records are loaded once with a
 * schema of only those types and once with a double added, and the two tables compared
 * column by column; occurred_at is to_timestamp("time") for every time PostgreSQL can hold.
 */
import avro from 'avsc';
import { describe, expect, it } from 'vitest';
import { exactTypeOptions } from '../src/currents/avro/exact-types.js';
import { ingest } from '../src/currents/ingest.js';
import { mapSchema } from '../src/currents/map-schema.js';
import { transcoderFor, type RowFacts, type RowOut } from '../src/currents/transcode-records.js';
import { openSource } from '../src/currents/source/open-source.js';
import { silentLogger } from '../src/log.js';
import { useDatabaseAndFolder } from './helpers/fixture.js';
import { currentsKey, encodeAvro, writeObject } from './helpers/avro.js';

const f = useDatabaseAndFolder('bb-transcode-');

const FIELDS = [
  { name: 'id', type: 'string' },
  { name: 'user_id', type: ['null', 'string'] },
  { name: 'note', type: ['string', 'null'] },
  { name: 'count', type: 'int' },
  { name: 'big', type: ['null', 'long'] },
  { name: 'flag', type: 'boolean' },
  { name: 'maybe', type: ['null', 'boolean'] },
  { name: 'time', type: ['null', 'long'] },
];
/** Only types the transcoder reads. */
const direct = { type: 'record', name: 'Direct', fields: FIELDS };
/** The same, and a double: read record by record. */
const formatted = { type: 'record', name: 'Formatted', fields: [...FIELDS, { name: 'ratio', type: 'double' }] };

/** Replaced by invalid UTF-8 (0xff 0xfe 0xff 0xfe) in the file's bytes. */
const INVALID = '~~~~';

const strings = ['plain', '', 'tab\there', 'new\nline', 'carriage\rreturn', 'back\\slash', '\\N', 'nul\u0000inside', 'del\u007f', 'é and 日本 and 😀', 'x'.repeat(5000), `bad ${INVALID} bytes`];
const times = [null, 0, -1, 1_780_000_000, -62_135_596_800, 253_402_300_799, 253_402_300_800, 8_000_000_000_000, -62_135_596_801, -100_000_000_000];
const bigs = [null, 0n, 123n, -1n, 9_007_199_254_740_993n, -9_223_372_036_854_775_808n, 9_223_372_036_854_775_807n];
const ints = [0, 1, -1, 2_147_483_647, -2_147_483_648, 1_780_000_000];

function records(): object[] {
  const out: object[] = [];
  for (let i = 0; i < 240; i++) {
    const s = strings[i % strings.length]!;
    out.push({
      id: i % 24 === 5 ? `id\t${i}\u0000é` : `id-${i}`,
      user_id: i % 3 === 0 ? null : s,
      note: i % 5 === 0 ? null : `${s} ${i}`,
      count: ints[i % ints.length],
      big: bigs[i % bigs.length],
      flag: i % 2 === 0,
      maybe: i % 3 === 0 ? null : i % 3 === 1,
      time: times[i % times.length] === null ? null : BigInt(times[i % times.length]!),
      ratio: i / 7,
    });
  }
  return out;
}

/** An Avro container file (codec null, so the bytes can be spoiled where the test says). */
async function file(schema: object, rows: object[]): Promise<Buffer> {
  const bytes = await encodeAvro(schema, rows, 'null', 4096, exactTypeOptions());
  const bad = Buffer.from(INVALID, 'latin1');
  for (let at = bytes.indexOf(bad); at >= 0; at = bytes.indexOf(bad, at)) bytes.set([0xff, 0xfe, 0xff, 0xfe], at);
  return bytes;
}

describe('Avro to COPY text, two ways', () => {
  it('straight from the bytes and record by record give the same rows, NULs counted alike, occurred_at exact', async () => {
    // The first schema is read straight from the bytes, the second record by record.
    const way = (schema: object) => {
      const type = avro.Type.forSchema(schema as avro.Schema, exactTypeOptions());
      return transcoderFor(type, { columns: mapSchema(type), extra: [], idKey: true }, 'k', { nul: 0 }) ? 'bytes' : 'records';
    };
    expect([way(direct), way(formatted)]).toEqual(['bytes', 'records']);
    // A union of two non-null types is read record by record (it crashed the byte path, failing the file).
    const twoTypes = { ...direct, name: 'TwoTypes', fields: [...direct.fields, { name: 'either', type: ['string', 'int'] }] };
    expect(way(twoTypes)).toBe('records');

    const rows = records();
    const put = async (eventType: string, schema: object) => {
      const key = currentsKey(eventType, '2026-11-01-00', 'f');
      writeObject(f.dir, key, await file(schema, rows));
    };
    await put('users.behaviors.Direct', direct);
    await put('users.behaviors.Formatted', formatted);

    const summary = await ingest(f.t.db, silentLogger, { source: openSource(`file://${f.dir}`), stateSchema: 'braze_bridge', targetSchema: 'ev', concurrency: 2 });

    expect(summary).toMatchObject({ status: 'succeeded', files: { loaded: 2, failed: 0 } });
    expect(summary.perType['users.behaviors.Direct']).toEqual({ files: 1, rows: 240, duplicates: 0, failed: 0 });
    expect(summary.perType['users.behaviors.Formatted']).toEqual({ files: 1, rows: 240, duplicates: 0, failed: 0 });
    // Every NUL in a string field was replaced and counted, in both files.
    const nul = rows.flatMap((r) => ['id', 'user_id', 'note'].map((f) => (r as Record<string, unknown>)[f])).reduce<number>((n, v) => n + (typeof v === 'string' ? v.split('\u0000').length - 1 : 0), 0);
    expect(nul).toBeGreaterThan(0);
    const nuls = await f.t.db.query<{ nul: number }>(`SELECT nul_replaced::int AS nul FROM braze_bridge.currents_files ORDER BY key`);
    expect(nuls.rows.map((r) => r.nul)).toEqual([nul, nul]);

    const columns = `id, user_id, note, count, big, flag, maybe, "time", occurred_at, source_key ~ '/f\\.avro$' AS source`;
    const diff = await f.t.db.query(
      `(SELECT ${columns} FROM ev.users_behaviors_direct EXCEPT ALL SELECT ${columns} FROM ev.users_behaviors_formatted)
       UNION ALL (SELECT ${columns} FROM ev.users_behaviors_formatted EXCEPT ALL SELECT ${columns} FROM ev.users_behaviors_direct)`,
    );
    expect(diff.rows).toEqual([]);

    // And the values are the ones written, as PostgreSQL holds them: NUL and invalid UTF-8 as U+FFFD.
    const stored = (v: unknown) => (typeof v === 'string' ? v.replaceAll('\u0000', '\uFFFD').replaceAll(INVALID, '\uFFFD'.repeat(4)) : v);
    const got = await f.t.db.query(`SELECT id, user_id, note, count::text, big::text, flag, maybe FROM ev.users_behaviors_direct`);
    const byId = new Map(got.rows.map((r) => [r.id, r]));
    for (const r of rows as Array<Record<string, unknown>>) {
      expect(byId.get(stored(r.id)), String(r.id)).toEqual({
        id: stored(r.id),
        user_id: stored(r.user_id),
        note: stored(r.note),
        count: String(r.count),
        big: r.big === null ? null : String(r.big),
        flag: r.flag,
        maybe: r.maybe,
      });
    }
    const time = await f.t.db.query(
      `SELECT count(*)::int AS n, bool_and(occurred_at IS NOT DISTINCT FROM to_timestamp("time")) AS exact, count(*) FILTER (WHERE occurred_at IS NULL)::int AS untimed
         FROM ev.users_behaviors_direct`,
    );
    expect(time.rows).toEqual([{ n: 240, exact: true, untimed: 24 }]);
  });
});

describe('Avro longs straight from the bytes', () => {
  const schema = { type: 'record', name: 'Longs', fields: [{ name: 'id', type: 'string' }, { name: 'big', type: 'long' }] };
  const type = avro.Type.forSchema(schema as avro.Schema, exactTypeOptions());
  const transcode = transcoderFor(type, { columns: mapSchema(type), extra: [], idKey: true }, 'k', { nul: 0 })!;
  const line = (bytes: Buffer): string => {
    const out: RowOut = { text: Buffer.alloc(64), used: 0, room(n) { if (this.used + n > this.text.length) this.text = Buffer.concat([this.text, Buffer.alloc(n)]); } };
    const facts: RowFacts = { idFrom: -1, idTo: -1, id: undefined, timed: true };
    const end = transcode(bytes, 0, out, facts);
    expect(end).toBe(bytes.length);
    return out.text.subarray(0, out.used).toString('latin1').split('\t')[1]!;
  };

  // avsc's long reader (and so the record-by-record path) turns both corrupt forms into some
  // value without a word; straight from the bytes they fail the file as corrupt.
  it('reads every 64-bit value as avsc does, and refuses a varint of more than 10 bytes or beyond 64 bits', () => {
    expect(transcode).toBeDefined();
    for (const big of [0n, -1n, 1n << 53n, -(1n << 63n), (1n << 63n) - 1n, 4611686018427387904n]) {
      expect(line(type.toBuffer({ id: 'a', big }))).toBe(String(big));
    }
    // id "a", then the largest value's 10 bytes with the continuation bit left on, and an 11th.
    const max = type.toBuffer({ id: 'a', big: (1n << 63n) - 1n });
    const eleven = Buffer.concat([max.subarray(0, max.length - 1), Buffer.from([max[max.length - 1]! | 0x80, 0x01])]);
    expect(eleven.length).toBe(2 + 11);
    expect(() => line(eleven)).toThrow(/more than 10 bytes/);
    const wide = Buffer.from(max);
    wide[wide.length - 1] = 0x03; // a 65th bit
    expect(() => line(wide)).toThrow(/beyond 64 bits/);
  });
});
