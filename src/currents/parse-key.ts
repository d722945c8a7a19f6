/**
 * What a Currents object key tells us: the event type and the UTC hour the events were
 * queued. Braze says the other segments may change, so they are not interpreted.
 *   <prefix>/dataexport.<cluster>.S3.integration.<id>/event_type=<type>/date=<YYYY-MM-DD-HH>/<...>/<...>.avro
 */
import { createHash } from 'node:crypto';

export interface CurrentsKey {
  key: string;
  eventType: string;
  /** The queued hour (UTC). */
  hour: Date;
}

/** Plain dotted event-type names only: they become table names. */
export const EVENT_TYPE = /^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)*$/;

/**
 * The key's event type and hour, or why it is not loaded. `refused` marks a key that looks like
 * a Currents file but cannot be read as one (an impossible date, an odd event type): the run
 * reports those, where other keys (not .avro, no event_type=) are only ignored.
 */
export function parseKey(key: string): CurrentsKey | { skip: string; refused?: boolean } {
  if (!key.endsWith('.avro')) return { skip: 'not an .avro file' };
  const type = /(?:^|\/)event_type=([^/]+)\//.exec(key)?.[1];
  if (!type) return { skip: 'no event_type= segment' };
  if (!EVENT_TYPE.test(type) || type.length > 1000) return { skip: `event type "${type.slice(0, 80)}" is not a plain dotted name`, refused: true };
  const segment = /(?:^|\/)date=([^/]*)\//.exec(key)?.[1];
  if (segment === undefined) return { skip: 'no date= segment', refused: true };
  const hour = parseHour(segment);
  if (typeof hour === 'string') return { skip: `date=${segment.slice(0, 40)}: ${hour}`, refused: true };
  return { key, eventType: type, hour };
}

/**
 * YYYY-MM-DD-HH as a UTC hour, or why not. Date.UTC rolls impossible dates over
 * (2026-02-30 becomes 2026-03-02), so every part is checked against the date it made.
 */
export function parseHour(text: string, hourOptional = false): Date | string {
  const m = (hourOptional ? /^(\d{4})-(\d{2})-(\d{2})(?:-(\d{2}))?$/ : /^(\d{4})-(\d{2})-(\d{2})-(\d{2})$/).exec(text);
  if (!m) return `not YYYY-MM-DD${hourOptional ? '[-HH]' : '-HH'}`;
  const [y, mo, d, h] = [Number(m[1]), Number(m[2]), Number(m[3]), Number(m[4] ?? 0)];
  const date = new Date(Date.UTC(y, mo - 1, d, h));
  if (h > 23) return `hour ${m[4]} does not exist (00 to 23)`;
  if (date.getUTCFullYear() !== y || date.getUTCMonth() !== mo - 1 || date.getUTCDate() !== d) return `${m[1]}-${m[2]}-${m[3]} is not a calendar date`;
  return date;
}

/** users.messages.email.Send → users_messages_email_send: the name a type's table gets when it is free. */
export function normalisedTableName(eventType: string): string {
  return eventType.toLowerCase().replace(/\./g, '_');
}

/**
 * The table name for an event type: the normalised name when it fits PostgreSQL's 63 bytes and
 * `hashed` is false; otherwise its first 50 characters and a stable hash of the exact type, so
 * long types and types that collide after normalisation (users.Foo, users_foo) get a table each.
 * Which name a type really got is recorded in currents_event_tables (see event-tables.ts).
 */
export function tableName(eventType: string, hashed = false): string {
  const name = normalisedTableName(eventType);
  if (!hashed && Buffer.byteLength(name) <= 63) return name;
  return `${name.slice(0, 50)}_${createHash('sha256').update(eventType).digest('hex').slice(0, 12)}`;
}
