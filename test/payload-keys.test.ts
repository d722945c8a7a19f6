import { describe, expect, it } from 'vitest';
import { KeyCounter, topLevelKeys } from '../src/audience/payload-keys.js';

/** JSON text as PostgreSQL's jsonb output writes it: ", " and ": " between entries. */
function pgText(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(pgText).join(', ')}]`;
  if (value !== null && typeof value === 'object') return `{${Object.entries(value).map(([k, v]) => `${JSON.stringify(k)}: ${pgText(v)}`).join(', ')}}`;
  return JSON.stringify(value);
}

describe('topLevelKeys', () => {
  it('lists the keys of the outer object only, whatever the values hold', () => {
    const value = {
      plain: 1,
      'with "quotes" and \\ backslash': 'a "quoted", string: {not: a key}',
      nested: { inner: { deeper: [1, { x: 'y' }] }, 'a, "b"': null },
      list: ['a', 'b, "c"', { k: 'v' }],
      'ünïcode ✓ 😀': true,
      empty: {},
      none: null,
      '': 'empty key',
    };
    expect(topLevelKeys(pgText(value))).toEqual(Object.keys(value));
    expect(topLevelKeys(JSON.stringify(value))).toEqual(Object.keys(value));
  });

  it('agrees with JSON.parse on random objects', () => {
    let seed = 7;
    const rand = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed % n);
    const chars = ['a', 'b', ' ', ',', ':', '"', '\\', '{', '}', '[', ']', '\n', 'é', '😀', '\u0001'];
    const str = () => Array.from({ length: rand(6) }, () => chars[rand(chars.length)]).join('');
    const val = (depth: number): unknown => {
      switch (depth > 2 ? rand(4) : rand(6)) {
        case 0: return str();
        case 1: return rand(1000) / 7;
        case 2: return rand(2) === 0;
        case 3: return null;
        case 4: return Array.from({ length: rand(4) }, () => val(depth + 1));
        default: return Object.fromEntries(Array.from({ length: rand(4) }, () => [str(), val(depth + 1)]));
      }
    };
    const counter = new KeyCounter();
    const expected: Record<string, number> = {};
    for (let i = 0; i < 2000; i++) {
      const obj = Object.fromEntries(Array.from({ length: rand(6) }, () => [str(), val(0)]));
      const keys = Object.keys(JSON.parse(JSON.stringify(obj)) as object);
      expect(topLevelKeys(pgText(obj))).toEqual(keys);
      counter.add(i % 2 ? pgText(obj) : JSON.stringify(obj));
      for (const k of keys) expected[k] = (expected[k] ?? 0) + 1;
    }
    expect(counter.perKey()).toEqual(expected);
    expect(counter.total).toBe(Object.values(expected).reduce((a, b) => a + b, 0));
  });

  it('counts a key once whether or not it was written with escapes, and tells apart keys that share a prefix', () => {
    const counter = new KeyCounter();
    for (const text of ['{"a": 1, "ab": 2}', '{"\\u0061": 3}', '{"\u0061b": 4, "abc": 5}', '{"ab": {"a": 1}}']) counter.add(text);
    expect(counter.perKey()).toEqual({ a: 2, ab: 3, abc: 1 });
  });

  it('counts a marked payload by its mark, together with scanned ones, and scans one whose mark does not fit the columns', () => {
    const counter = new KeyCounter(['a', 'b', 'constructor']);
    counter.addMarked('{"a":1,"b":2,"constructor":3}', '111');
    counter.addMarked('{"b":2}', '010');
    counter.addMarked('{"b":2}', '010');
    counter.addMarked('{"a": 1, "z": 2}', null); // a change: its keys are scanned
    counter.addMarked('{"q": 1}', '1'); // a mark of another length: scanned, not trusted
    expect(counter.perKey()).toEqual({ a: 2, b: 3, constructor: 1, z: 1, q: 1 });
    expect(counter.total).toBe(8);
  });

  it("counts keys named like an object's own properties, and many keys of one length", () => {
    const counter = new KeyCounter();
    const wide = Object.fromEntries(Array.from({ length: 120 }, (_, i) => [`k${String(i).padStart(3, '0')}`, i]));
    for (let i = 0; i < 3; i++) counter.add(JSON.stringify({ constructor: 1, __proto__x: 2, toString: 3, ...wide }));
    counter.add('{"__proto__": 1, "hasOwnProperty": 2}');
    const counts = counter.perKey();
    expect(counts.constructor).toBe(3);
    expect(counts.toString).toBe(3);
    expect(counts.__proto__x).toBe(3);
    expect(Object.getOwnPropertyDescriptor(counts, '__proto__')?.value).toBe(1);
    expect(counts.hasOwnProperty).toBe(1);
    expect(counts.k000).toBe(3);
    expect(counts.k119).toBe(3);
    expect(counter.total).toBe(3 * 123 + 2);
  });
});
