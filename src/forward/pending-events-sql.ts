/**
 * The pending-events query of a forward run: one UNION ALL over the event tables the config's
 * rules name, of the events this destination has not handled yet, with the external id already
 * learned for each user, ordered by user and event time so the relay can group a user's events
 * and send them in order. Pending means "no row in forward_events" rather than "newer than a
 * watermark", so an event Currents delivers late is never skipped.
 *
 * Generated because each event table has its own columns (a Purchase has product_id, a custom
 * event has properties JSON), read from the catalog first. Parameters:
 *   $1      the destination (forward_events.destination, forward_identities.destination)
 *   $2      `since` (timestamptz), or null for every event
 *   $3 ...  the strings of the config, each once: event table names, custom event names,
 *           property keys, the email property; identifiers are quoted, never parameters
 */
import { escapeIdentifier, type Queryable } from '../db/pool.js';
import type { ForwardConfig, ForwardRule } from './config.js';
import { forwardTables } from './forward-store.js';

/** One pending event, as the query returns it. */
export interface PendingEvent {
  /** The event table it comes from, e.g. users_behaviors_purchase. */
  event_table: string;
  id: string;
  /** The Braze user id; rows come grouped by it. */
  user_id: string;
  /** The external id carried by this event, if any. */
  external_user_id: string | null;
  /** The external id learned for this user by an earlier run, if any. */
  known_external: string | null;
  /** Event time in epoch milliseconds (bigint as text). */
  time_ms: string;
  timezone: string | null;
  /** Index of the rule that selected the event, in `PendingEventsSql.rules`. */
  rule: number;
  /** The properties the rule passes on. */
  props: Record<string, unknown> | null;
  /** With anonymous_id email_md5: the email to hash. */
  email: string | null;
}

export interface PendingEventsSql {
  sql: string;
  params: unknown[];
  /** The rules the query covers; a row's `rule` indexes this list. Run the query only when it is not empty. */
  rules: ForwardRule[];
  /** Rules left out because their event table does not exist yet, in words for the summary. */
  skipped: string[];
}

export async function pendingEventsSql(db: Queryable, stateSchema: string, config: ForwardConfig): Promise<PendingEventsSql> {
  const params: unknown[] = [config.destination, config.since ?? null];
  const refs = new Map<string, string>();
  const text = (value: string) => {
    let ref = refs.get(value);
    if (!ref) {
      ref = `$${params.push(value)}::text`;
      refs.set(value, ref);
    }
    return ref;
  };
  const tables = forwardTables(stateSchema);
  const parts: string[] = [];
  const rules: ForwardRule[] = [];
  const skipped: string[] = [];
  const columnsOf = new Map<string, Set<string>>();
  // The table each event type was really loaded into (long or colliding types get a hashed name).
  const mapped = await db.query<{ event_type: string; table_name: string }>(
    `SELECT event_type, table_name FROM ${escapeIdentifier(stateSchema)}.currents_event_tables WHERE target_schema = $1 AND event_type = ANY($2::text[])`,
    [config.sourceSchema, config.rules.map((r) => r.eventType)],
  );
  const tableOf = new Map(mapped.rows.map((r) => [r.event_type, r.table_name]));
  for (const configured of config.rules) {
    const rule = { ...configured, table: tableOf.get(configured.eventType) ?? configured.table };
    const qualified = `${escapeIdentifier(config.sourceSchema)}.${escapeIdentifier(rule.table)}`;
    let cols = columnsOf.get(rule.table);
    if (!cols) {
      cols = await columnsOfTable(db, qualified);
      columnsOf.set(rule.table, cols);
    }
    // Currents creates a table when it loads the first file of its type: until then, nothing to send.
    if (!cols.has('id') || !cols.has('user_id')) {
      skipped.push(`${rule.eventType}${rule.name ? ` "${rule.name}"` : ''}: no table ${config.sourceSchema}.${rule.table} yet`);
      continue;
    }
    const index = rules.push(rule) - 1;
    const has = (c: string) => cols.has(c);
    const col = (c: string, type = 'text') => (has(c) ? `e.${escapeIdentifier(c)}` : `NULL::${type}`);
    const propertiesJson = has('properties') ? `CASE WHEN jsonb_typeof(e.properties) = 'object' THEN e.properties END` : null;
    // A listed property comes from the event's properties JSON, else from a column of that name.
    const property = (p: string) => {
      const sources = [propertiesJson ? `${propertiesJson} -> ${text(p)}` : null, has(p) && p !== 'properties' ? `to_jsonb(e.${escapeIdentifier(p)})` : null].filter(Boolean);
      return sources.length > 0 ? `coalesce(${sources.join(', ')})` : 'NULL::jsonb';
    };
    const props =
      rule.properties === 'all'
        ? (propertiesJson ?? 'NULL::jsonb')
        : rule.properties.length === 0
          ? `'{}'::jsonb`
          : // Not jsonb_strip_nulls: it strips nulls inside nested values too; absent top-level ones are dropped in build-payload.ts.
            `jsonb_build_object(${rule.properties.map((p) => `${text(p)}, ${property(p)}`).join(', ')})`;
    const anonymous = config.anonymousId;
    const email =
      anonymous.kind === 'email_md5'
        ? `coalesce(${[propertiesJson ? `${propertiesJson} ->> ${text(anonymous.property)}` : null, has(anonymous.property) ? `e.${escapeIdentifier(anonymous.property)}::text` : null, 'NULL::text'].filter(Boolean).join(', ')})`
        : 'NULL::text';
    const time = has('time') ? `(e."time" * 1000)::bigint` : `(extract(epoch FROM e.occurred_at) * 1000)::bigint`;
    parts.push(`SELECT ${text(rule.table)} AS event_table, e.id, e.user_id, ${col('external_user_id')} AS external_user_id, ${time}::text AS time_ms,
              ${col('timezone')} AS timezone, ${index} AS rule, ${props} AS props, ${email} AS email
         FROM ${qualified} AS e
        WHERE ${rule.name ? `${col('name')} = ${text(rule.name)} AND ` : ''}($2::timestamptz IS NULL OR e.occurred_at >= $2) AND NOT EXISTS (
              SELECT 1 FROM ${tables.events} AS f WHERE f.destination = $1 AND f.event_table = ${text(rule.table)} AND f.event_key = ${EVENT_KEY})`);
  }
  const sql = `SELECT u.*, i.external_user_id AS known_external FROM (${parts.join('\nUNION ALL\n') || 'SELECT NULL WHERE false'}) AS u
    LEFT JOIN ${tables.identities} AS i ON i.destination = $1 AND i.braze_user_id = u.user_id
    ORDER BY u.user_id, u.time_ms::bigint, u.id`;
  return { sql, params, rules, skipped };
}

/**
 * forward_events.event_key of an event: its id, or the MD5 of an id too long for a btree entry.
 * The same expression as the generated column (migration 0007) and the event tables' id_key
 * (0006); computed from e.id so tables from before 0006, without id_key, match too.
 */
const EVENT_KEY = `(CASE WHEN octet_length(e.id) > 1000 THEN 'md5:' || md5(e.id) ELSE e.id END)`;

/** The column names of a table, or none when it does not exist. */
async function columnsOfTable(db: Queryable, qualified: string): Promise<Set<string>> {
  const { rows } = await db.query<{ name: string }>(
    `SELECT attname::text AS name FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped`,
    [qualified],
  );
  return new Set(rows.map((r) => r.name));
}
