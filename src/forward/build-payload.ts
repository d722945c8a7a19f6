/**
 * The Movable Ink body of one event: `track` (or `identify`), the user's ids, the event time in
 * epoch milliseconds, its time zone and properties. Pure, so the dry run prints exactly what a
 * real run would send.
 */
import { createHash } from 'node:crypto';
import { PII, type ForwardConfig, type ForwardRule } from './config.js';

/** A value that looks like an email address. */
const EMAIL_VALUE = /[^\s@]+@[^\s@]+\.[^\s@]+/;

/**
 * A value that looks like a phone number: 7 to 15 digits written as a phone number is (a leading
 * +, or separated by spaces, dots, dashes or parentheses). Bare digit strings (order ids, SKUs)
 * are kept.
 */
function looksLikePhone(v: string): boolean {
  if (!/^\+?[\d\s().-]+$/.test(v)) return false;
  const digits = v.replace(/\D/g, '').length;
  return digits >= 7 && digits <= 15 && (v.trim().startsWith('+') || /\d[\s().-]+\d/.test(v));
}

/**
 * "all": every property except personal data, at any depth: keys that name it (email, e_mail,
 * phone, mobile, dob, birth…) and string values that look like an email address or a phone
 * number, wherever they are. Nulls are kept: they say "no value" to the partner.
 */
export function withoutPersonalData(value: unknown): unknown {
  if (typeof value === 'string') return EMAIL_VALUE.test(value) || looksLikePhone(value) ? undefined : value;
  if (Array.isArray(value)) return value.map(withoutPersonalData).filter((v) => v !== undefined);
  if (value && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) {
      if (PII.test(k)) continue;
      const kept = withoutPersonalData(v);
      if (kept !== undefined) out[k] = kept;
    }
    return out;
  }
  return value;
}
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
  // "all" passes every property except personal data; a list passes the named ones that have a value.
  const properties =
    rule.properties === 'all'
      ? (withoutPersonalData(ev.props ?? {}) as Record<string, unknown>)
      : Object.fromEntries(Object.entries(ev.props ?? {}).filter(([, v]) => v !== null && v !== undefined));
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
