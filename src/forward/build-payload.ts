/**
 * The Movable Ink body of one event: `track` (or `identify`), the user's ids, the event time in
 * epoch milliseconds, its time zone and properties. Pure, so the dry run prints exactly what a
 * real run would send.
 */
import { createHash } from 'node:crypto';
import { PII, type ForwardConfig, type ForwardRule } from './config.js';
import type { PendingEvent } from './pending-events-sql.js';

/** What the payload is built from: one pending event's fields. */
export type PayloadSource = Pick<PendingEvent, 'user_id' | 'time_ms' | 'timezone' | 'props' | 'email'>;

/**
 * `known` is the external id the user goes by (on this event or learned before): with it the
 * event is sent as that user, without it under an anonymous id (the Braze user id, or the MD5
 * of the email, as the config says). An `identify` sends both, which is what links them.
 */
export function buildPayload(config: ForwardConfig, rule: ForwardRule, ev: PayloadSource, known: string | null): Record<string, unknown> {
  const anonymous =
    config.anonymousId.kind === 'email_md5' && ev.email ? createHash('md5').update(ev.email.trim().toLowerCase()).digest('hex') : ev.user_id;
  // "all" passes every property except those that look like personal data.
  const properties = rule.properties === 'all' ? Object.fromEntries(Object.entries(ev.props ?? {}).filter(([k]) => !PII.test(k))) : (ev.props ?? {});
  const ids = rule.identify ? { ...(known ? { user_id: known } : {}), anonymous_id: anonymous } : known ? { user_id: known } : { anonymous_id: anonymous };
  return {
    type: rule.identify ? 'identify' : 'track',
    ...(rule.identify ? {} : { event: rule.event }),
    ...ids,
    timestamp: Number(ev.time_ms),
    ...(ev.timezone ? { timezone: ev.timezone } : {}),
    ...(Object.keys(properties).length > 0 || !rule.identify ? { properties } : {}),
  };
}
