/**
 * The per-member SQL at its edges, on a real PostgreSQL: every value that fails a check is
 * reported with its reason, whatever cheap test decides first that a member needs its checks,
 * and every value just inside a limit passes. Also the attribute JSON: NULLs and JSON nulls left
 * out, NULLs nested in an object kept.
 */
import { afterAll, beforeAll, expect, test } from 'vitest';
import { describeAudience } from '../src/audience/plan-deltas.js';
import { parseAudience } from '../src/audience/load-audience.js';
import { createTestDatabase, type TestDatabase } from './helpers/database.js';

let t: TestDatabase;
beforeAll(async () => {
  t = await createTestDatabase();
});
afterAll(async () => {
  await t.drop();
});

/**
 * Each row's reasons (or null), attributes and their JSON text, by external_id, for the given
 * columns of `vals`. `session` runs on the connection first (a setting to evaluate under).
 */
async function evaluate(
  columns: string,
  rows: string,
  session?: string,
): Promise<Map<string, { invalid: string | null; attrs: Record<string, unknown>; text: string }>> {
  await t.db.query('DROP TABLE IF EXISTS vals');
  await t.db.query(`CREATE TABLE vals AS SELECT * FROM (VALUES ${rows}) AS v(${columns})`);
  const audience = parseAudience('edges', '/audiences/edges.sql', 'SELECT * FROM vals');
  return t.db.withConnection(async (conn) => {
    if (session) await conn.query(session);
    try {
      const { member } = await describeAudience(t.db, conn, audience);
      // Cast to json: the text must be valid JSON for every row, a member that fails a check included.
      const { rows: out } = await conn.query<{ id: string; invalid: string | null; attrs: Record<string, unknown>; text: string; present: string }>(
        `SELECT h.external_id AS id, ${member.invalid} AS invalid, (${member.attrs})::json AS attrs, ${member.attrs} AS text, ${member.present} AS present FROM ${member.rowsFrom('vals')}`,
      );
      // `present` marks exactly the columns the JSON carries.
      for (const r of out) expect([...r.present].flatMap((m, i) => (m === '1' ? [member.attributes[i]!.name] : [])).sort()).toEqual(Object.keys(r.attrs).sort());
      return new Map(out.map((r) => [r.id, { invalid: r.invalid, attrs: r.attrs, text: r.text }]));
    } finally {
      if (session) await conn.query('RESET ALL');
    }
  });
}

/**
 * Rows of valid values with one bad value each: a check hidden behind another column's test
 * (which would let it through with a wrong cheap test of its own) cannot pass unnoticed.
 */
function oneBadEach(valid: string[], bad: Record<string, Array<[id: string, value: string]>>, columns: string[]): string {
  const rows = [`('ok', ${valid.join(', ')})`];
  for (const [column, values] of Object.entries(bad)) {
    const i = columns.indexOf(column);
    for (const [id, value] of values) rows.push(`('${id}', ${valid.map((v, j) => (j === i ? value : v)).join(', ')})`);
  }
  return rows.join(',\n');
}

test('numbers: NaN, infinities and values beyond ±2^53 fail in numeric, float and bigint; the bounds pass', async () => {
  const columns = ['n', 'f', 'r', 'b'];
  const r = await evaluate(
    `external_id, ${columns.join(', ')}`,
    oneBadEach(['9007199254740991::numeric', '-9007199254740991::float8', '1.5::real', '-9007199254740991::bigint'], {
      n: [['n-nan', "'NaN'::numeric"], ['n-inf', "'Infinity'::numeric"], ['n-ninf', "'-Infinity'::numeric"], ['n-big', '9007199254740992::numeric'], ['n-small', '-9007199254740992.5::numeric']],
      f: [['f-nan', "'NaN'::float8"], ['f-inf', "'Infinity'::float8"], ['f-ninf', "'-Infinity'::float8"], ['f-big', '-9007199254740994::float8']],
      r: [['r-nan', "'NaN'::real"], ['r-inf', "'-Infinity'::real"], ['r-big', '1e20::real']],
      b: [['b-big', '9007199254740992::bigint'], ['b-min', "'-9223372036854775808'::bigint"]],
    }, columns),
  );
  expect(r.get('ok')!.invalid).toBeNull();
  expect(r.get('ok')!.attrs).toEqual({ n: 9007199254740991, f: -9007199254740991, r: 1.5, b: -9007199254740991 });
  for (const [id, v] of r) {
    if (id === 'ok') continue;
    const [column, what] = id.split('-');
    const expected = column === 'b' ? 'integer beyond ±2^53' : what === 'big' || what === 'small' ? 'number beyond ±2^53' : 'NaN or infinity is not a JSON number';
    expect(v.invalid, id).toMatch(new RegExp(`^${column}: ${expected.replace(/[\^$]/g, (c) => `\\${c}`)}[^;]*$`));
  }
});

test('dates and times: infinities and years outside 0001–3000 fail; the first and last instants pass', async () => {
  const columns = ['d', 'ts', 'tz'];
  const r = await evaluate(
    `external_id, ${columns.join(', ')}`,
    oneBadEach(["date '0001-01-01'", "timestamp '3000-12-31 23:59:59.999'", "timestamptz '0001-01-01 00:00:00+00'"], {
      d: [['d-inf', "'infinity'::date"], ['d-ninf', "'-infinity'::date"], ['d-late', "date '3001-01-01'"], ['d-bc', "date '0001-12-31 BC'"]],
      ts: [['ts-inf', "'infinity'::timestamp"], ['ts-ninf', "'-infinity'::timestamp"], ['ts-late', "timestamp '3001-01-01 00:00:00'"], ['ts-bc', "timestamp '0001-12-31 23:59:59 BC'"]],
      tz: [['tz-inf', "'infinity'::timestamptz"], ['tz-ninf', "'-infinity'::timestamptz"], ['tz-late', "timestamptz '3001-01-01 00:00:00+00'"], ['tz-bc', "timestamptz '0001-12-31 23:59:59+00 BC'"]],
    }, columns),
  );
  expect(r.get('ok')!.invalid).toBeNull();
  expect(r.get('ok')!.attrs).toEqual({ d: '0001-01-01', ts: '3000-12-31T23:59:59.999Z', tz: '0001-01-01T00:00:00.000Z' });
  for (const [id, v] of r) {
    if (id === 'ok') continue;
    const [column, what] = id.split('-');
    const expected = what === 'inf' || what === 'ninf' ? `infinite ${column === 'd' ? 'date' : 'timestamp'}` : 'year outside 0001–3000';
    expect(v.invalid, id).toMatch(new RegExp(`^${column}: ${expected}[^;]*$`));
  }
  // An infinite value is left out of the attributes like a NULL, not written as JSON null.
  expect(r.get('d-inf')!.attrs).not.toHaveProperty('d');
  expect(r.get('tz-ninf')!.attrs).not.toHaveProperty('tz');
  // Near the bounds in another zone: 3001-01-01 00:30 at +01 is 3000-12-31 23:30 UTC, inside.
  const edge = await evaluate('external_id, tz', `('in', timestamptz '3001-01-01 00:30:00+01'), ('out', timestamptz '0001-01-01 00:30:00+01')`);
  expect(edge.get('in')!.invalid).toBeNull();
  expect(edge.get('out')!.invalid).toMatch(/^tz: year outside/);
});

test('strings and arrays: lengths as Braze counts them, NULL elements, nesting, item counts', async () => {
  const emoji = '😀'.repeat(128); // 128 characters, 256 UTF-16 code units, 512 bytes
  const columns = ['s', 'a'];
  const r = await evaluate(
    `external_id, ${columns.join(', ')}`,
    oneBadEach(["'x'", "ARRAY['a']"], {
      s: [['s-emoji', `'${emoji}'`], ['s-long', "repeat('x', 256)"]],
      a: [['a-emoji', `ARRAY['${emoji}']`], ['a-long', "ARRAY['a', repeat('b', 256)]"], ['a-nulls', "ARRAY['a', NULL]"], ['a-many', "array_fill('x'::text, ARRAY[26])"],
          ['a-nested', "ARRAY[['a', 'b'], ['c', 'd']]"]],
    }, columns) + `, ('fine1', repeat('é', 255), ARRAY[repeat('x', 255)]), ('fine2', repeat('x', 255), array_fill('x'::text, ARRAY[25])), ('ws ', 'x', ARRAY['a']), (E'\\tx', 'x', ARRAY['a']), (E'\\r\\n', 'x', ARRAY['a'])`,
  );
  const reasons: Record<string, string | null> = {
    ok: null,
    fine1: null,
    fine2: null,
    's-emoji': 's: longer than 255 characters as Braze counts them (UTF-16 code units)',
    's-long': 's: longer than 255 characters as Braze counts them (UTF-16 code units)',
    'a-emoji': 'a: array element longer than 255 characters',
    'a-long': 'a: array element longer than 255 characters',
    'a-nulls': 'a: array contains NULL',
    'a-many': 'a: array longer than 25 items (--max-array-length; Braze keeps no more)',
    'a-nested': 'a: multi-dimensional array (Braze arrays hold strings)',
    'ws ': 'external_id: the identifier has leading or trailing whitespace',
    '\tx': 'external_id: the identifier has leading or trailing whitespace',
    '\r\n': 'external_id: the identifier is only whitespace',
  };
  expect(Object.fromEntries([...r].map(([id, v]) => [id, v.invalid]))).toEqual(reasons);
});

test('objects: non-objects, operation keys, nested keys with " ", "." or "$" (escaped or not), long keys, 100 KB', async () => {
  const r = await evaluate(
    'external_id, o',
    `('ok', '{"a": {"x": null, "y": "has space. and $"}, "$time": 1}'::jsonb),
     ('dot', '{"a": {"b.c": 1}}'::jsonb),
     ('space', '{"k": [{"has space": 1}]}'::jsonb),
     ('escaped', '{"q\\"uote": {"d$": "v"}}'::jsonb),
     ('op', '{"inc": 1}'::jsonb),
     ('arr', '[1, 2]'::jsonb),
     ('str', '"text"'::jsonb),
     ('jnull', 'null'::jsonb),
     ('sqlnull', NULL::jsonb),
     ('longkey', jsonb_build_object('x', jsonb_build_object(repeat('k', 256), 1))),
     ('okkey', jsonb_build_object('x', jsonb_build_object(repeat('k', 255), 1))),
     ('huge', jsonb_build_object('x', repeat('v', 102400)))`,
  );
  expect(r.get('ok')!.invalid).toBeNull();
  expect(r.get('ok')!.attrs).toEqual({ o: { a: { x: null, y: 'has space. and $' }, $time: 1 } });
  expect(r.get('dot')!.invalid).toBe('o: nested key with a space, "." or "$" (Braze refuses them)');
  expect(r.get('space')!.invalid).toBe('o: nested key with a space, "." or "$" (Braze refuses them)');
  expect(r.get('escaped')!.invalid).toBe('o: nested key with a space, "." or "$" (Braze refuses them)');
  expect(r.get('op')!.invalid).toBe('o: JSON object has a key Braze reads as an operation (inc, add, remove, $add, …), not as a value');
  expect(r.get('arr')!.invalid).toBe('o: JSON value is not an object (nested attributes are objects)');
  expect(r.get('str')!.invalid).toBe('o: JSON value is not an object (nested attributes are objects)');
  expect(r.get('jnull')!.invalid).toBeNull();
  expect(r.get('jnull')!.attrs).toEqual({});
  expect(r.get('sqlnull')!.attrs).toEqual({});
  expect(r.get('longkey')!.invalid).toBe('o: nested key longer than 255 characters');
  expect(r.get('okkey')!.invalid).toBeNull();
  expect(r.get('huge')!.invalid).toBe('o: JSON object larger than 100 KB (Braze limit)');
});

test('floats are sent written out, as numbers always were (no exponent, no -0)', async () => {
  const r = await evaluate(
    'external_id, r, d',
    `('big', 10000000::real, 1e15::float8), ('odd', 1234567::real, '-0'::float8), ('tiny', 0.1::real, 1.5e-7::float8)`,
  );
  expect(r.get('big')!.text).toBe('{"r":10000000,"d":1000000000000000}');
  expect(r.get('odd')!.text).toBe('{"r":1234567,"d":0}');
  expect(r.get('tiny')!.text).toBe('{"r":0.1,"d":0.00000015}');
});

test('a wide audience: more than 100 columns, some NULL, make one object and one mark per column', async () => {
  const n = 130;
  const names = Array.from({ length: n }, (_, i) => `c${i}`);
  const row = (id: string, f: (i: number) => string) => `('${id}', ${names.map((_, i) => f(i)).join(', ')})`;
  const r = await evaluate(
    `external_id, ${names.join(', ')}`,
    [row('full', (i) => String(i)), row('gaps', (i) => (i % 3 === 0 ? 'NULL::int' : String(i))), row('empty', () => 'NULL::int')].join(', '),
  );
  expect(r.get('full')!.attrs).toEqual(Object.fromEntries(names.map((c, i) => [c, i])));
  expect(r.get('gaps')!.attrs).toEqual(Object.fromEntries(names.flatMap((c, i) => (i % 3 === 0 ? [] : [[c, i]]))));
  expect(r.get('empty')!.text).toBe('{}');
});

test('standard_conforming_strings off changes nothing: patterns, escapes and odd column names mean the same', async () => {
  const columns = `external_id, "a\\b", "q'uote", j, email`;
  const rows = `('s1', 'x', 'y', '{"k": "\\u0000"}'::json, 'sam.smith@example.com'),
                ('s2', 'x', 'y', '{"k": 1}'::json, 'no at sign')`;
  const on = await evaluate(columns, rows);
  const off = await evaluate(columns, rows, 'SET standard_conforming_strings = off');
  expect(off).toEqual(on);
  expect(on.get('s1')!.invalid).toBe('j: JSON holds \\u0000, which Braze (and jsonb) cannot store');
  expect(on.get('s2')!.invalid).toBe('email: email is an email address');
  expect(on.get('s2')!.attrs).toEqual({ 'a\\b': 'x', "q'uote": 'y', j: { k: 1 }, email: 'no at sign' });
});

test('attributes: NULL values are left out, whatever their type, and a member with none is an empty object', async () => {
  const r = await evaluate(
    'external_id, s, n, b, d, a, o',
    `('some', NULL::text, 1, NULL::boolean, NULL::date, ARRAY['x'], NULL::jsonb),
     ('none', NULL::text, NULL::int, NULL::boolean, NULL::date, NULL::text[], 'null'::jsonb),
     ('all', '', 0, false, date '2026-01-02', ARRAY[]::text[], '{}'::jsonb)`,
  );
  expect(r.get('some')!.attrs).toEqual({ n: 1, a: ['x'] });
  expect(r.get('none')!.attrs).toEqual({});
  expect(r.get('all')!.attrs).toEqual({ s: '', n: 0, b: false, d: '2026-01-02', a: [], o: {} });
  for (const v of r.values()) expect(v.invalid).toBeNull();
});

test('standard fields keep their own format checks next to the column test', async () => {
  const r = await evaluate('external_id, gender, country', `('ok', 'F', 'DE'), ('bad', 'female', 'Germany')`);
  expect(r.get('ok')!.invalid).toBeNull();
  expect(r.get('bad')!.invalid).toMatch(/^gender: .*; country: /);
});
