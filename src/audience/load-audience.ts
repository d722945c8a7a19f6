/**
 * Reads audience files: optional `-- @key value` header lines at the top, then one SELECT.
 * The format is a contract documented in the README; anything it does not allow is an
 * AudienceError naming the file and line, so a typo never silently changes what is sent.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import { AudienceError, ConfigError } from '../errors.js';
import { CronExpressionParser } from 'cron-parser';
import { identifierKinds, type Audience, type IdentifierKind, type OnExit } from '../types.js';
import { splitStatement } from './sql-text.js';

const NAME = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$/;
/** A header line: `-- @key value`. */
const HEADER = /^--\s*@([A-Za-z_]+)(?:\s+(.*))?$/;
/** Anything that looks meant as a header line, to refuse the ones that would be ignored. */
const HEADER_LIKE = /^\s*--\s*@/;
/** The same after a block comment or SQL on one line: it would be ignored too. */
const HEADER_ANYWHERE = /--\s*@[A-Za-z_]/;
/** Keys an @on_exit object may not set: identifiers and control keys Braze reads specially. */
const ON_EXIT_FORBIDDEN = new Set(['external_id', 'braze_id', 'user_alias', 'email', 'phone', '_update_existing_only', '_merge_objects', 'push_token_import', 'update_existing_only', 'app_id']);
const OPERATION_KEYS = new Set(['inc', 'add', 'remove', '$add', '$remove', '$update']);

/** List the audience files in `dir` (sorted), or the ones named. */
export function findAudienceFiles(dir: string, names?: readonly string[]): string[] {
  let entries: string[];
  try {
    if (!statSync(dir).isDirectory()) throw new Error('not a directory');
    // Hidden files and editor leftovers (.#x.sql, #x.sql#, x.sql~) are not audiences.
    entries = readdirSync(dir)
      .filter((f) => f.endsWith('.sql') && !f.startsWith('.') && !f.startsWith('#'))
      .sort();
  } catch {
    throw new ConfigError([`audience folder ${dir} does not exist or is not a folder: pass --audiences DIR`]);
  }
  if (!names || names.length === 0) {
    if (entries.length === 0) throw new ConfigError([`no .sql audience files in ${dir}`]);
    return entries.map((f) => join(dir, f));
  }
  const missing = names.filter((n) => !entries.includes(`${n}.sql`));
  if (missing.length > 0) {
    throw new ConfigError(missing.map((n) => `audience ${n} not found: no file ${join(dir, `${n}.sql`)}`));
  }
  return names.map((n) => join(dir, `${n}.sql`));
}

export function loadAudience(file: string): Audience {
  const name = basename(file, '.sql');
  if (!NAME.test(name)) {
    throw new AudienceError(file, `the file name must be <name>.sql with letters, digits, _ . - only`);
  }
  let bytes: Buffer;
  try {
    bytes = readFileSync(file);
  } catch (error) {
    throw new AudienceError(file, `cannot read the file (${(error as NodeJS.ErrnoException).code ?? error})`, undefined, { cause: error });
  }
  let text: string;
  try {
    // fatal: a file in another encoding is refused, never read with U+FFFD in place of letters.
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: false }).decode(bytes);
  } catch {
    throw new AudienceError(file, 'the file is not UTF-8 text: save it as UTF-8');
  }
  return parseAudience(name, file, text);
}

export function parseAudience(name: string, file: string, text: string): Audience {
  const lines = text.replace(/^\uFEFF/, '').split(/\r?\n/);
  const seen = new Map<string, number>();
  const header: Record<string, { value: string; line: number }> = {};
  // The header block: blank lines, -- comments (header lines among them) and /* … */ comments
  // before the first line of SQL.
  let i = 0;
  let inBlock = false;
  for (; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (inBlock) {
      if (line.includes('*/')) {
        inBlock = false;
        if (line.slice(line.indexOf('*/') + 2).trim() !== '') break;
      }
      continue;
    }
    if (line === '') continue;
    if (line.startsWith('/*')) {
      if (!line.includes('*/', 2)) inBlock = true;
      else if (line.slice(line.indexOf('*/', 2) + 2).trim() !== '') break;
      continue;
    }
    if (!line.startsWith('--')) break;
    if (!HEADER_LIKE.test(line)) continue; // an ordinary comment
    const m = HEADER.exec(line);
    if (!m || /^--\s*@\s/.test(line)) throw new AudienceError(file, `"${line.slice(0, 60)}" is not a header line: write -- @key value, with no space after @`, i + 1);
    const key = m[1]!.toLowerCase();
    if (seen.has(key)) throw new AudienceError(file, `@${key} is given twice (first on line ${seen.get(key)})`, i + 1);
    seen.set(key, i + 1);
    // A comment after a value is allowed (`-- @on_exit keep -- see ticket 42`); JSON keeps its text.
    const raw = (m[2] ?? '').trim();
    header[key] = { value: raw.startsWith('{') ? raw : raw.replace(/\s+--.*$/, ''), line: i + 1 };
  }
  const sqlLine = i + 1;
  // A header line below the SQL's start would be ignored without a word: refuse it.
  for (let j = i; j < lines.length; j++) {
    if (HEADER_ANYWHERE.test(lines[j]!)) throw new AudienceError(file, `a header line below the query is ignored: move "${lines[j]!.trim().slice(0, 60)}" above the SELECT`, j + 1);
  }
  const rest = lines.slice(i).join('\n');
  const { body, secondAt } = splitStatement(rest);
  if (secondAt !== undefined) {
    const line = sqlLine + (rest.slice(0, secondAt).match(/\n/g)?.length ?? 0);
    throw new AudienceError(file, 'more than one statement: an audience file holds exactly one SELECT', line);
  }
  const sql = body.replace(/\s+$/, '');
  const first = firstKeyword(sql);
  if (first === '') throw new AudienceError(file, 'no query: an audience file holds one SELECT below its header');
  if (!['select', 'with', 'values', 'table', '('].includes(first)) {
    throw new AudienceError(file, `expected a SELECT, found "${first.toUpperCase()}": an audience file holds one SELECT`, sqlLine);
  }

  const audience: Audience = { name, file, sql, sqlLine, onExit: { kind: 'unset' } };
  for (const [key, { value, line }] of Object.entries(header)) {
    const bad = (why: string): never => {
      throw new AudienceError(file, `@${key} ${why}`, line);
    };
    switch (key) {
      case 'identifier':
        if (!(identifierKinds as readonly string[]).includes(value)) bad(`must be one of ${identifierKinds.join(', ')}; got "${value}"`);
        audience.identifier = value as IdentifierKind;
        break;
      case 'on_exit':
        audience.onExit = parseOnExit(value, bad);
        break;
      case 'update_existing_only':
        if (value !== 'true' && value !== 'false') bad(`must be true or false; got "${value}"`);
        audience.updateExistingOnly = value === 'true';
        break;
      case 'schedule': {
        // The parser the scheduler uses: what passes here is what runs.
        let valid = value.split(/\s+/).length === 5;
        try {
          if (valid) CronExpressionParser.parse(value, { tz: header.timezone?.value || 'UTC' });
        } catch {
          valid = false;
        }
        if (!valid) bad(`must be a 5-field cron expression such as "0 * * * *"; got "${value}"`);
        audience.schedule = value;
        break;
      }
      case 'max_change_ratio': {
        const ratio = Number(value);
        if (value === '' || !Number.isFinite(ratio) || ratio < 0 || ratio > 1) bad(`must be a number from 0 to 1; got "${value}"`);
        audience.maxChangeRatio = ratio;
        break;
      }
      case 'timezone':
        try {
          new Intl.DateTimeFormat('en', { timeZone: value });
        } catch {
          bad(`must be an IANA time zone such as Europe/Berlin; got "${value}"`);
        }
        audience.timezone = value;
        break;
      default:
        bad('is not a known header key: use @identifier, @on_exit, @update_existing_only, @max_change_ratio, @schedule or @timezone');
    }
  }
  return audience;
}

function parseOnExit(value: string, bad: (why: string) => never): OnExit {
  if (value === 'unset') return { kind: 'unset' };
  if (value === 'keep') return { kind: 'keep' };
  if (value.startsWith('{')) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(value);
    } catch {
      return bad(`is not valid JSON: ${value}`);
    }
    if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed) || Object.keys(parsed).length === 0) {
      return bad('must be unset, keep, or a non-empty JSON object of attributes to set');
    }
    for (const [key, v] of Object.entries(parsed as Record<string, unknown>)) {
      const problem = onExitProblem(key, v);
      if (problem) return bad(`key "${key}": ${problem}`);
    }
    return { kind: 'set', values: parsed as Record<string, unknown> };
  }
  return bad(`must be unset, keep, or a JSON object such as {"in_vip": false}; got "${value}"`);
}

/** Why Braze would not take `value` for the attribute `key` as given, or undefined. Same rules as the columns. */
function onExitProblem(key: string, value: unknown): string | undefined {
  if (ON_EXIT_FORBIDDEN.has(key) || key.startsWith('__bb_')) return 'is an identifier or control key Braze reads specially, not an attribute';
  if (key.length > 255) return 'the name is longer than 255 characters';
  if (value === null || typeof value === 'boolean') return undefined;
  if (typeof value === 'number') return Number.isFinite(value) && Math.abs(value) <= Number.MAX_SAFE_INTEGER ? undefined : 'the number is beyond ±2^53';
  if (typeof value === 'string') return value.length > 255 ? 'longer than 255 characters' : undefined;
  if (Array.isArray(value)) {
    if (!value.every((e) => typeof e === 'string' && e.length <= 255)) return 'arrays hold strings of at most 255 characters';
    if (value.length > 100) return 'an array longer than 100 items (Braze keeps 25 unless raised, 100 at most)';
    return undefined;
  }
  if (typeof value === 'object') {
    if (Object.keys(value).some((k) => OPERATION_KEYS.has(k))) return 'an object Braze would read as an operation (inc, add, remove, …)';
    const bad = (o: unknown): boolean =>
      Array.isArray(o) ? o.some(bad) : o !== null && typeof o === 'object' ? Object.entries(o).some(([k, v]) => (/[ .$]/.test(k) && k !== '$time') || k.length > 255 || bad(v)) : false;
    return bad(value) ? 'nested keys may not hold a space, "." or "$"' : undefined;
  }
  return 'not a value Braze stores';
}

/** The first keyword of a query, skipping comments. */
function firstKeyword(sql: string): string {
  const stripped = sql.replace(/--[^\n]*\n?/g, ' ').replace(/\/\*[\s\S]*?\*\//g, ' ').trimStart();
  if (stripped.startsWith('(')) return '(';
  return (/^[A-Za-z]+/.exec(stripped)?.[0] ?? stripped.slice(0, 10)).toLowerCase();
}
