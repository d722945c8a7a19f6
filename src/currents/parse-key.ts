/**
 * What a Currents object key tells us: the event type and the UTC hour the events were
 * queued. Braze says the other segments may change, so they are not interpreted.
 *   <prefix>/dataexport.<cluster>.S3.integration.<id>/event_type=<type>/date=<YYYY-MM-DD-HH>/<...>/<...>.avro
 */

export interface CurrentsKey {
  key: string;
  eventType: string;
  /** The queued hour (UTC). */
  hour: Date;
}

/** Plain dotted event-type names only: they become table names. */
export const EVENT_TYPE = /^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)*$/;

/** The key's event type and hour, or a reason it is not a Currents data file. */
export function parseKey(key: string): CurrentsKey | { skip: string } {
  if (!key.endsWith('.avro')) return { skip: 'not an .avro file' };
  const type = /(?:^|\/)event_type=([^/]+)\//.exec(key)?.[1];
  const date = /(?:^|\/)date=(\d{4})-(\d{2})-(\d{2})-(\d{2})\//.exec(key);
  if (!type) return { skip: 'no event_type= segment' };
  if (!EVENT_TYPE.test(type) || type.length > 200) return { skip: `event type "${type.slice(0, 80)}" is not a plain dotted name` };
  if (!date) return { skip: 'no date=YYYY-MM-DD-HH segment' };
  const hour = new Date(Date.UTC(Number(date[1]), Number(date[2]) - 1, Number(date[3]), Number(date[4])));
  if (Number.isNaN(hour.getTime()) || hour.getUTCHours() !== Number(date[4])) return { skip: `date=${date.slice(1).join('-')} is not a valid hour` };
  return { key, eventType: type, hour };
}

/** users.messages.email.Send → users_messages_email_send (at most 63 bytes, PostgreSQL's limit). */
export function tableName(eventType: string): string {
  const name = eventType.toLowerCase().replace(/\./g, '_');
  if (name.length > 63) throw new Error(`event type ${eventType} makes a table name longer than 63 characters`);
  return name;
}
