/**
 * The forwarding config file (e.g. jobs/movable-ink.json): which Currents events go out, under
 * which Movable Ink event name, with which properties, and which are `identify` events. Read
 * and validated once; every problem is reported together.
 */
import { readFileSync } from 'node:fs';
import { ConfigError } from '../errors.js';
import { EVENT_TYPE, tableName } from '../currents/parse-key.js';

export interface ForwardRule {
  eventType: string;
  table: string;
  /** Custom event name to match (CustomEvent), or undefined for every event of the type. */
  name?: string;
  /** The Movable Ink event name. */
  event: string;
  identify: boolean;
  /** Properties to pass: keys of the event's `properties` JSON, or columns of its table. */
  properties: string[] | 'all';
}

export interface ForwardConfig {
  destination: string;
  sourceSchema: string;
  since?: Date;
  /** How users without an external id are identified: their Braze user id, or the MD5 of an email property. */
  anonymousId: { kind: 'braze_user_id' } | { kind: 'email_md5'; property: string };
  rules: ForwardRule[];
  concurrency: number;
  ratePerSecond: number;
}

/** Keys that look like personal data: never sent unless a rule names them explicitly. */
export const PII = /e[-_. ]?mail|phone|mobile|msisdn|dob|birth/i;

/** Product Viewed → product_viewed; users.behaviors.Purchase → purchase. */
export function snakeCase(name: string): string {
  return name
    .replace(/([a-z0-9])([A-Z])/g, '$1_$2')
    .replace(/[^A-Za-z0-9]+/g, '_')
    .replace(/^_+|_+$/g, '')
    .toLowerCase();
}

export function loadForwardConfig(file: string): ForwardConfig {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (error) {
    throw new ConfigError([`--config ${file}: ${(error as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : `not valid JSON (${(error as Error).message})`}`]);
  }
  return parseForwardConfig(raw, file);
}

export function parseForwardConfig(raw: unknown, file = 'config'): ForwardConfig {
  const problems: string[] = [];
  const c = (raw ?? {}) as Record<string, unknown>;
  const known = ['destination', 'source_schema', 'since', 'anonymous_id', 'events', 'concurrency', 'rate_limit_per_second'];
  for (const k of Object.keys(c)) if (!known.includes(k)) problems.push(`${file}: unknown key "${k}" (known: ${known.join(', ')})`);
  // A wrong value is a problem to report, never a silent fall-back to the default.
  const destination = c.destination === undefined ? 'movable-ink' : String(c.destination);
  if (c.destination !== undefined && (typeof c.destination !== 'string' || !/^[a-z0-9_-]+$/.test(c.destination))) {
    problems.push(`${file}: destination must be a lower-case name such as "movable-ink"; got ${JSON.stringify(c.destination)}`);
  }
  const sourceSchema = c.source_schema === undefined ? 'braze_currents' : String(c.source_schema);
  if (typeof c.source_schema !== 'undefined' && (typeof c.source_schema !== 'string' || !/^[a-z_][a-z0-9_]{0,62}$/.test(c.source_schema))) {
    problems.push(`${file}: source_schema must be a lower-case SQL name; got ${JSON.stringify(c.source_schema)}`);
  }
  let since: Date | undefined;
  if (c.since !== undefined) {
    since = new Date(String(c.since));
    if (typeof c.since !== 'string' || Number.isNaN(since.getTime())) problems.push(`${file}: since must be an ISO date such as 2026-11-01T00:00:00Z`);
  }
  let anonymousId: ForwardConfig['anonymousId'] = { kind: 'braze_user_id' };
  if (c.anonymous_id === 'email_md5') anonymousId = { kind: 'email_md5', property: 'email' };
  else if (c.anonymous_id && typeof c.anonymous_id === 'object' && typeof (c.anonymous_id as { email_md5_of?: unknown }).email_md5_of === 'string') {
    anonymousId = { kind: 'email_md5', property: (c.anonymous_id as { email_md5_of: string }).email_md5_of };
  } else if (c.anonymous_id !== undefined && c.anonymous_id !== 'braze_user_id') {
    problems.push(`${file}: anonymous_id must be "braze_user_id", "email_md5" or {"email_md5_of": "<property>"}`);
  }
  const rules: ForwardRule[] = [];
  if (!Array.isArray(c.events) || c.events.length === 0) problems.push(`${file}: events must be a non-empty list`);
  for (const [i, e] of (Array.isArray(c.events) ? c.events : []).entries()) {
    const r = (e ?? {}) as Record<string, unknown>;
    const where = `${file}: events[${i}]`;
    for (const k of Object.keys(r)) if (!['event_type', 'name', 'event', 'identify', 'properties'].includes(k)) problems.push(`${where}: unknown key "${k}"`);
    if (typeof r.event_type !== 'string' || !EVENT_TYPE.test(r.event_type)) {
      problems.push(`${where}: event_type must be a Currents event type such as users.behaviors.CustomEvent`);
      continue;
    }
    if (r.name !== undefined && (typeof r.name !== 'string' || r.name === '')) problems.push(`${where}: name must be the Braze event name as a string; got ${JSON.stringify(r.name)}`);
    if (r.identify !== undefined && typeof r.identify !== 'boolean') problems.push(`${where}: identify must be true or false; got ${JSON.stringify(r.identify)}`);
    if (r.event !== undefined && typeof r.event !== 'string') problems.push(`${where}: event must be a string; got ${JSON.stringify(r.event)}`);
    const name = typeof r.name === 'string' ? r.name : undefined;
    if (r.event_type === 'users.behaviors.CustomEvent' && !name) problems.push(`${where}: custom events need the Braze event "name" to forward`);
    const properties = r.properties === undefined ? [] : r.properties === 'all' ? 'all' : Array.isArray(r.properties) && r.properties.every((p) => typeof p === 'string') ? (r.properties as string[]) : null;
    if (properties === null) problems.push(`${where}: properties must be a list of property names, or "all"`);
    const event = typeof r.event === 'string' ? r.event : snakeCase(name ?? r.event_type.split('.').at(-1)!);
    if (!/^[a-z0-9_]+$/.test(event)) problems.push(`${where}: event "${event}" must be snake_case`);
    rules.push({ eventType: r.event_type, table: tableName(r.event_type), name, event, identify: r.identify === true, properties: properties ?? [] });
  }
  const seen = new Set<string>();
  for (const r of rules) {
    const k = `${r.eventType}/${r.name ?? '*'}`;
    if (seen.has(k)) problems.push(`${file}: ${r.eventType}${r.name ? ` "${r.name}"` : ''} appears in two rules; each event may be forwarded once`);
    seen.add(k);
  }
  const int = (key: string, fallback: number, max: number) => {
    const v = c[key];
    if (v === undefined) return fallback;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > max) problems.push(`${file}: ${key} must be a whole number from 1 to ${max}`);
    return typeof v === 'number' ? v : fallback;
  };
  const config: ForwardConfig = { destination, sourceSchema, since, anonymousId, rules, concurrency: int('concurrency', 4, 64), ratePerSecond: int('rate_limit_per_second', 50, 10_000) };
  if (problems.length > 0) throw new ConfigError(problems);
  return config;
}
