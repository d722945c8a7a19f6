/**
 * Reads audience files: optional `-- @key value` header lines at the top, then one SELECT.
 * The format is a contract documented in the README; anything it does not allow is an
 * AudienceError naming the file and line, so a typo never silently changes what is sent.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import { AudienceError, ConfigError } from '../errors.js';
import { identifierKinds, type Audience, type IdentifierKind, type OnExit } from '../types.js';

const NAME = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$/;
const HEADER = /^--\s*@([A-Za-z_]+)\s*(.*)$/;
const CRON_FIELD = /^[0-9*,/\-A-Za-z?LW#]+$/;

/** List the audience files in `dir` (sorted), or the ones named. */
export function findAudienceFiles(dir: string, names?: readonly string[]): string[] {
  let entries: string[];
  try {
    if (!statSync(dir).isDirectory()) throw new Error('not a directory');
    entries = readdirSync(dir).filter((f) => f.endsWith('.sql')).sort();
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
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    throw new AudienceError(file, `cannot read the file (${(error as NodeJS.ErrnoException).code ?? error})`, undefined, { cause: error });
  }
  return parseAudience(name, file, text);
}

export function parseAudience(name: string, file: string, text: string): Audience {
  const lines = text.split(/\r?\n/);
  const seen = new Map<string, number>();
  const header: Record<string, { value: string; line: number }> = {};
  let i = 0;
  for (; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (line === '') continue;
    if (!line.startsWith('--')) break;
    const m = HEADER.exec(line);
    if (!m) continue; // an ordinary comment
    const key = m[1]!.toLowerCase();
    if (seen.has(key)) throw new AudienceError(file, `@${key} is given twice (first on line ${seen.get(key)})`, i + 1);
    seen.set(key, i + 1);
    header[key] = { value: m[2]!.trim(), line: i + 1 };
  }
  const sqlLine = i + 1;
  let sql = lines.slice(i).join('\n').replace(/[\s;]+$/, '');
  if (sql.trim() === '') throw new AudienceError(file, 'no query: an audience file holds one SELECT below its header');
  const first = firstKeyword(sql);
  if (!['select', 'with', 'values', 'table', '('].includes(first)) {
    throw new AudienceError(file, `expected a SELECT, found "${first.toUpperCase()}": an audience file holds one SELECT`, sqlLine);
  }
  sql = sql.replace(/\s+$/, '');

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
        const fields = value.split(/\s+/);
        if (fields.length !== 5 || !fields.every((f) => CRON_FIELD.test(f))) bad(`must be a 5-field cron expression such as "0 * * * *"; got "${value}"`);
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
    return { kind: 'set', values: parsed as Record<string, unknown> };
  }
  return bad(`must be unset, keep, or a JSON object such as {"in_vip": false}; got "${value}"`);
}

/** The first keyword of a query, skipping comments. */
function firstKeyword(sql: string): string {
  const stripped = sql.replace(/--[^\n]*\n?/g, ' ').replace(/\/\*[\s\S]*?\*\//g, ' ').trimStart();
  if (stripped.startsWith('(')) return '(';
  return (/^[A-Za-z]+/.exec(stripped)?.[0] ?? stripped.slice(0, 10)).toLowerCase();
}
