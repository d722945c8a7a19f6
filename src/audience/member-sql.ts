/**
 * Turns an audience's result columns into three SQL expressions over the query's rows: the
 * member key, the attributes as the exact JSON Braze receives (NULLs left out), and a
 * validation message for members Braze would reject. Doing the conversion in SQL means the
 * snapshot comparison is exact (numbers compare numerically, JSON keys are unordered, times
 * are UTC with milliseconds) and Node never holds the whole audience.
 */
import { AudienceError } from '../errors.js';
import { columnRules, standardFieldCheck } from './value-checks.js';
import { escapeIdentifier, sqlLiteral, type Queryable } from '../db/pool.js';
import { identifierKinds, type Audience, type AttributeKind, type IdentifierKind } from '../types.js';

export type { AttributeKind } from '../types.js';

export interface MemberSql {
  identifier: IdentifierKind;
  /** text: the member key; NULL when the identifier is missing. */
  key: string;
  /**
   * text: the attributes to hold in Braze as a JSON object, NULLs left out, as compact JSON text
   * (cast it to json or jsonb to use it as JSON).
   */
  attrs: string;
  /** text: '1' or '0' per attribute column, in order: whether `attrs` carries it. */
  present: string;
  /** text: why this member cannot be sent, or NULL. */
  invalid: string;
  attributes: Array<{ name: string; kind: AttributeKind }>;
  /**
   * The FROM item for `source` (a table or subquery holding the audience's columns) under the
   * alias the expressions use, with the values several of them read computed once, a level
   * below: PostgreSQL evaluates an expression again at each reference (a jsonb column's text,
   * read by its JSON value and by two of its checks, was built three times per member).
   */
  rowsFrom(source: string): string;
  /** The column names, types and identifier, hashed into every row hash. */
  signature: string;
  /**
   * bigint: a hash of the row's attribute values ($1 is the signature). Equal values hash
   * equal whatever their text form (time zone, numeric scale), so only real changes and the
   * rare collision-free false candidate reach the JSON comparison.
   */
  rowHash(serverVersion: number, signature?: string): string;
}

interface PgType {
  oid: number;
  typname: string;
  typtype: string;
  typbasetype: number;
  typelem: number;
  typcategory: string;
  /** 0 for a type that takes no collation. */
  typcollation: number;
}

const STRING_TYPES = new Set(['text', 'varchar', 'bpchar', 'uuid', 'name', 'citext']);
const SCALAR_KINDS: Record<string, AttributeKind> = {
  bool: 'boolean',
  int2: 'integer',
  int4: 'integer',
  int8: 'bigint',
  numeric: 'number',
  float4: 'number',
  float8: 'number',
  date: 'date',
  timestamp: 'timestamp',
  timestamptz: 'timestamptz',
  json: 'object',
  jsonb: 'object',
};
/** Names that Braze reads as something other than an attribute: identifiers and control keys. */
const RESERVED = new Set(['external_id', 'braze_id', 'user_alias', '_update_existing_only', '_merge_objects', 'push_token_import', 'update_existing_only', 'app_id']);
/** Braze's identifier precedence: an object is matched by the first of these it carries. */
const PRECEDENCE: readonly string[] = ['external_id', 'braze_id', 'user_alias', 'email', 'phone'];

export interface MemberSqlOptions {
  /** Items an array attribute may hold (Braze keeps 25 by default, up to 100 when raised). */
  maxArrayLength?: number;
}

/** Look up the types of the result columns, resolving domains to their base types. */
export async function resolveTypes(db: Queryable, oids: number[]): Promise<Map<number, PgType>> {
  const types = new Map<number, PgType>();
  let pending = [...new Set(oids)];
  while (pending.length > 0) {
    const { rows } = await db.query<PgType>(
      'SELECT oid::int, typname::text, typtype::text, typbasetype::int, typelem::int, typcategory::text, typcollation::int FROM pg_type WHERE oid = ANY($1::oid[])',
      [pending],
    );
    for (const r of rows) types.set(r.oid, r);
    pending = rows.flatMap((r) => [r.typbasetype, r.typelem]).filter((o) => o !== 0 && !types.has(o));
  }
  return types;
}

/**
 * @param alias the name the expressions use for the row holding the audience's columns
 */
export function buildMemberSql(audience: Audience, columns: Array<{ name: string; typeOid: number }>, types: Map<number, PgType>, alias = 'q', options: MemberSqlOptions = {}): MemberSql {
  const maxArray = options.maxArrayLength ?? 25;
  const fail = (detail: string): never => {
    throw new AudienceError(audience.file, detail);
  };
  const names = columns.map((c) => c.name);
  for (const c of columns) {
    if (c.name === '?column?' || c.name === '') fail('a column has no name: give every expression a name with AS');
    if (c.name.startsWith('__bb_')) fail(`column "${c.name}": names starting with __bb_ are reserved for braze-bridge`);
  }
  const dup = names.find((n, i) => names.indexOf(n) !== i);
  if (dup) fail(`column "${dup}" appears twice: every attribute needs its own name`);

  const identifier =
    audience.identifier ??
    identifierKinds.find((k) => (k === 'user_alias' ? names.includes('alias_name') && names.includes('alias_label') : names.includes(k))) ??
    fail(`no identifier column: name one column external_id, braze_id, email or phone (or alias_name and alias_label), or set -- @identifier`);
  const idColumns = identifier === 'user_alias' ? ['alias_name', 'alias_label'] : [identifier];
  for (const c of idColumns) if (!names.includes(c)) fail(`@identifier ${identifier} needs a column named ${c}`);
  // A column named like an identifier Braze matches before the audience's own would send the
  // update to another profile (with both, email wins over phone).
  for (const higher of PRECEDENCE.slice(0, PRECEDENCE.indexOf(identifier))) {
    if (names.includes(higher) && higher !== 'user_alias') {
      fail(`column "${higher}" would make Braze match profiles by ${higher} instead of this audience's @identifier ${identifier}: rename it with AS, or make it the @identifier`);
    }
  }

  // A string column keeps the collation it was declared with: a case- or accent-blind one
  // (nondeterministic) would make 'X' equal 'x' in the key's join and in the row hash, so a
  // change of case would go unsent. Every collatable column is read under the database's
  // default collation, which is deterministic: equal means byte for byte.
  const collatable = new Set(columns.filter((c) => (types.get(c.typeOid)?.typcollation ?? 0) !== 0).map((c) => c.name));
  const col = (n: string) => (collatable.has(n) ? `(${alias}.${escapeIdentifier(n)} COLLATE "default")` : `${alias}.${escapeIdentifier(n)}`);
  const key =
    identifier === 'user_alias'
      ? `CASE WHEN ${col('alias_name')} IS NULL OR ${col('alias_label')} IS NULL OR ${col('alias_name')}::text = '' OR ${col('alias_label')}::text = '' THEN NULL ELSE jsonb_build_array(${col('alias_name')}::text, ${col('alias_label')}::text)::text END`
      : `NULLIF(${col(identifier)}::text, '')`;

  const hashed: string[] = [];
  /** Each attribute's `"name":` (a text literal), its value as JSON text, and the test that it is left out. */
  const pairs: Array<{ label: string; value: string; absent: string }> = [];
  const checks: string[] = [];
  /**
   * Cheap tests, one per column with checks, each true whenever any of that column's checks is:
   * the messages are built only for a member that fails one of them (nearly none), so a valid
   * member costs one test per column instead of every check. A check without a column test
   * (standard fields, the identifier's format) is its own test.
   */
  const suspects: string[] = [];
  const attributes: MemberSql['attributes'] = [];
  /** Values computed once per row below the expressions (see rowsFrom), each `expr AS "__bb_…"`. */
  const pre: string[] = [];
  // The identifier itself: Braze would match a padded or malformed one to no profile, or the wrong one.
  const idCheck = (cond: string, why: string, suspect = true) => {
    checks.push(`CASE WHEN ${cond} THEN ${sqlLiteral(why)} END`);
    if (suspect) suspects.push(cond);
  };
  for (const c of idColumns) {
    const v = `${col(c)}::text`;
    // Both whitespace checks imply that trimming changes the value.
    suspects.push(`btrim(${v}, E' \\t\\r\\n') <> ${v}`);
    idCheck(`${v} <> '' AND btrim(${v}, E' \\t\\r\\n') = ''`, `${c}: the identifier is only whitespace`, false);
    idCheck(`btrim(${v}, E' \\t\\r\\n') <> '' AND btrim(${v}, E' \\t\\r\\n') <> ${v}`, `${c}: the identifier has leading or trailing whitespace`, false);
  }
  if (identifier === 'email') idCheck(`${col('email')}::text !~ ${sqlLiteral('^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$')}`, 'email: not an email address');
  if (identifier === 'phone') idCheck(`${col('phone')}::text !~ ${sqlLiteral('^\\+[1-9][0-9]{6,14}$')}`, 'phone: not a phone number in E.164 form (+ and 7 to 15 digits)');
  for (const c of columns) {
    if (idColumns.includes(c.name)) continue;
    if (RESERVED.has(c.name)) fail(`column "${c.name}" is reserved by Braze as an identifier or flag: rename it with AS, or make it the @identifier`);
    const type = baseType(c.typeOid, types);
    const kind = kindOf(c, type, types, audience.file);
    attributes.push({ name: c.name, kind });
    const v = col(c.name);
    const label = jsonKeyLiteral(c.name);
    const base = type?.typname;
    // json (not jsonb) may hold \u0000, which jsonb refuses: the cast would fail the whole audience.
    const j = base === 'json' ? `(CASE WHEN strpos(${v}::text, ${sqlLiteral('\\u0000')}) > 0 THEN NULL ELSE ${v}::jsonb END)` : `${v}::jsonb`;
    // Canonical forms for hashing: text for anything string-like (citext would hash case-blind).
    hashed.push(kind === 'string' ? `${v}::text` : kind === 'string_array' ? `${v}::text[]` : kind === 'object' ? j : v);
    const check = (cond: string, why: string) => checks.push(`CASE WHEN ${cond} THEN ${sqlLiteral(`${c.name}: ${why}`)} END`);
    const own = (cond: string, why: string) => {
      check(cond, why);
      suspects.push(cond);
    };
    // A jsonb column's text: its JSON value, and what the cheap test and the size check read.
    let text: string | undefined;
    if (kind === 'object' && base === 'jsonb') {
      const name = `__bb_text${pre.length}`;
      pre.push(`${j}::text AS ${escapeIdentifier(name)}`);
      text = col(name);
    }
    const rules = columnRules(kind, v, j, { maxArray, float: base === 'float4' || base === 'float8', text }, check);
    pairs.push({ label, value: rules.value, absent: rules.absent });
    if (rules.suspect) suspects.push(rules.suspect);
    // Standard fields' format checks are not covered by the column's test: each is its own.
    standardFieldCheck(c.name, kind, v, own, (why) => fail(`column "${c.name}" is a Braze standard field: ${why}`));
  }
  // The attributes as JSON text, built by concatenation: building jsonb cost twice as much, and
  // reading it back out as text as much again, for every member a first sync sends. Each value
  // is already JSON text (columnRules); an absent one is left out.
  const attrs = jsonObjectText(pairs.map((p) => `CASE WHEN ${p.absent} THEN NULL ELSE ${p.label} || ${p.value} END`));
  // Which columns are present ('1') or left out ('0'), in column order: counted per attribute
  // for new members (perAttributeSql) without parsing their JSON.
  const marks = pairs.map((p) => `CASE WHEN ${p.absent} THEN '0' ELSE '1' END`);
  const markChunks: string[] = [];
  for (let i = 0; i < marks.length; i += 99) markChunks.push(`concat(${marks.slice(i, i + 99).join(', ')})`);
  const present = markChunks.length === 0 ? `''` : markChunks.length === 1 ? markChunks[0]! : `concat(${markChunks.join(', ')})`;
  const invalid =
    checks.length > 0 ? `CASE WHEN ${suspects.map((t) => `(${t})`).join(' OR ')} THEN NULLIF(concat_ws('; ', ${checks.join(', ')}), '') END` : 'NULL::text';
  // Part of every row hash: a change of columns, types or identifier makes every row a candidate.
  const signature = JSON.stringify({ identifier, columns: columns.map((c) => [c.name, c.typeOid]) });
  const rowHash = (serverVersion: number, param = '$1') =>
    hashed.length === 0
      ? `hashtextextended(${param}, 0)`
      : serverVersion >= 140000
        ? `hash_record_extended(ROW(${hashed.join(', ')}), hashtextextended(${param}, 0))`
        : // Before PostgreSQL 14: the row's text (exact: extra_float_digits is raised while it runs).
          `('x' || left(md5(${param} || ROW(${hashed.join(', ')})::text), 16))::bit(64)::bigint`;
  const rowsFrom = (source: string) => (pre.length === 0 ? `${source} AS ${alias}` : `(SELECT ${alias}.*, ${pre.join(', ')} FROM ${source} AS ${alias} OFFSET 0) AS ${alias}`);
  return { identifier, key, attrs, present, invalid, attributes, signature, rowHash, rowsFrom };
}

/** The type of `oid` with its domains resolved. */
function baseType(oid: number, types: Map<number, PgType>): PgType | undefined {
  let t = types.get(oid);
  while (t && t.typtype === 'd') t = types.get(t.typbasetype);
  return t;
}

/** The kind of column `c`, whose type with its domains resolved is `t`. */
function kindOf(c: { name: string; typeOid: number }, t: PgType | undefined, types: Map<number, PgType>, file: string): AttributeKind {
  const unsupported = (name: string): never => {
    throw new AudienceError(
      file,
      `column "${c.name}" has type ${name}, which braze-bridge cannot send: cast it (to text, numeric, boolean, date, timestamptz, text[] or jsonb)`,
    );
  };
  if (!t) return unsupported(`oid ${c.typeOid}`);
  if (t.typtype === 'e') return 'string';
  if (STRING_TYPES.has(t.typname)) return 'string';
  const scalar = SCALAR_KINDS[t.typname];
  if (scalar) return scalar;
  if (t.typcategory === 'A' && t.typelem) {
    const e = baseType(t.typelem, types);
    if (e && (STRING_TYPES.has(e.typname) || e.typtype === 'e')) return 'string_array';
    return unsupported(`${e?.typname ?? 'unknown'}[]`);
  }
  return unsupported(t.typname);
}

/**
 * A JSON object as text from its entries (each `"key":value` text, or NULL to leave it out).
 * concat_ws takes at most 100 arguments: chunks of 99, an empty chunk dropped by NULLIF so that
 * no comma is doubled.
 */
export function jsonObjectText(entries: readonly string[]): string {
  const chunks: string[] = [];
  for (let i = 0; i < entries.length; i += 99) chunks.push(`concat_ws(',', ${entries.slice(i, i + 99).join(', ')})`);
  if (chunks.length === 0) return `'{}'`;
  return `'{' || ${chunks.length === 1 ? chunks[0] : `concat_ws(',', ${chunks.map((c) => `NULLIF(${c}, '')`).join(', ')})`} || '}'`;
}

/**
 * `"name":` as a text literal: the key as JSON writes it (quotes, backslashes and control
 * characters escaped), in an E'' literal so its backslashes mean the same whatever
 * standard_conforming_strings.
 */
export function jsonKeyLiteral(name: string): string {
  return sqlLiteral(`${JSON.stringify(name)}:`);
}
