/**
 * The client for Braze's `POST /users/export/ids`: reads profiles back, up to 50 external ids or
 * aliases per request, or one email, phone or braze id per request. It has its own rate limiter
 * (the endpoint's limit, 250 per minute by default, is apart from /users/track's) and the same
 * retry rules as delivery (with-retries.ts): 408, 429 and 5xx are retried, 401/403/404 stop.
 */
import { AbortError, BrazeHttpError } from '../errors.js';
import { withRetries, type Attempt, type RetryStats } from '../http/with-retries.js';
import { retryAfterMs } from '../http/rate-limiter.js';
import { postToBraze, resolveClientOptions, type BrazeClientOptions, type ResolvedClientOptions } from './client-options.js';
import type { IdentifierKind } from '../types.js';

/** Ids per request for external ids and aliases; other identifiers are looked up one at a time. */
export const EXPORT_BATCH = 50;

export type ExportClientOptions = BrazeClientOptions;

/** One exported profile: identifiers, standard fields at the top, custom attributes apart. */
export interface ExportedUser {
  external_id?: string;
  user_aliases?: Array<{ alias_name: string; alias_label: string }>;
  braze_id?: string;
  email?: string;
  phone?: string;
  custom_attributes?: Record<string, unknown>;
  [field: string]: unknown;
}

/** The identifiers that can be exported many to a request. */
export function isBatchable(kind: IdentifierKind): boolean {
  return kind === 'external_id' || kind === 'user_alias';
}

export class ExportClient {
  readonly stats: RetryStats = { requests: 0, retries: 0, rateLimited: 0 };
  private readonly url: URL;
  private readonly o: ResolvedClientOptions;

  constructor(private readonly options: ExportClientOptions) {
    this.url = new URL(`${options.endpoint.replace(/\/+$/, '')}/users/export/ids`);
    this.o = resolveClientOptions(options);
  }

  /**
   * The profiles of `keys` (member keys of one identifier kind: an alias key is the JSON
   * `[name, label]`), by member key; a key Braze does not know is absent from the map.
   * `fields` is fields_to_export. At most 50 keys for external ids and aliases, else one.
   */
  async export(kind: IdentifierKind, keys: readonly string[], fields: readonly string[]): Promise<Map<string, ExportedUser>> {
    if (keys.length === 0) return new Map();
    if (keys.length > (isBatchable(kind) ? EXPORT_BATCH : 1)) throw new RangeError(`at most ${isBatchable(kind) ? EXPORT_BATCH : 1} ${kind} per export request`);
    const request: Record<string, unknown> = { fields_to_export: fields };
    if (kind === 'external_id') request.external_ids = keys;
    else if (kind === 'user_alias') request.user_aliases = keys.map((k) => aliasOf(k));
    else request[kind === 'email' ? 'email_address' : kind] = keys[0];
    const body = JSON.stringify(request);
    const users = await withRetries(this.o, this.stats, () => this.attempt(body), (attempts, seconds, last) =>
      new AbortError(`Braze did not answer an export after ${attempts} attempts in ${seconds}s (last: ${last}); stopping: members not yet checked are checked by the next verify`),
    );
    const found = new Map<string, ExportedUser>();
    for (const key of keys) {
      const user = users.find((u) => matches(kind, key, u));
      if (user) found.set(key, user);
    }
    return found;
  }

  private async attempt(body: string): Promise<Attempt<ExportedUser[]>> {
    const sent = await postToBraze(this.url, this.options, this.o.timeoutMs, this.stats, body);
    if ('retry' in sent) return { kind: 'retry', reason: sent.retry };
    const { response } = sent;
    const status = response.status;
    let parsed: { users?: unknown; message?: unknown } | undefined;
    try {
      parsed = JSON.parse(response.text) as typeof parsed;
    } catch {
      parsed = undefined;
    }
    const message = typeof parsed?.message === 'string' ? parsed.message : response.text.slice(0, 200).replace(/\s+/g, ' ');
    if (status >= 200 && status < 300) {
      // An answer we cannot read proves nothing about any member: retrying would not help either.
      if (!parsed || !Array.isArray(parsed.users)) throw new AbortError(`Braze answered the export with ${status} but no users list ("${message}")`);
      return { kind: 'done', result: parsed.users as ExportedUser[] };
    }
    if (status === 429) {
      const waitMs = retryAfterMs(response.headers, this.o.clock());
      if (waitMs !== undefined) this.options.rateLimiter.pauseUntil(this.o.clock() + waitMs);
      return { kind: 'retry', reason: '429 rate limited', waitMs: waitMs ?? undefined, rateLimited: true };
    }
    if (status === 408 || status >= 500) return { kind: 'retry', reason: `${status} ${message}` };
    if (status === 401) throw new BrazeHttpError(`Braze answered 401 Unauthorized to an export: the API key is wrong, or BRAZE_REST_ENDPOINT (${this.url.host}) is not your workspace's instance`, 401);
    if (status === 403) throw new BrazeHttpError('Braze answered 403 Forbidden to an export: the API key lacks the users.export.ids permission', 403);
    throw new BrazeHttpError(`Braze answered ${status} to an export: ${message}`, status);
  }
}

function aliasOf(key: string): { alias_name: string; alias_label: string } {
  const [alias_name, alias_label] = JSON.parse(key) as [string, string];
  return { alias_name, alias_label };
}

/** Whether an exported user is the profile a member key reaches (emails match whatever their case). */
function matches(kind: IdentifierKind, key: string, user: ExportedUser): boolean {
  switch (kind) {
    case 'external_id':
      return user.external_id === key;
    case 'user_alias': {
      const a = aliasOf(key);
      return (user.user_aliases ?? []).some((x) => x.alias_name === a.alias_name && x.alias_label === a.alias_label);
    }
    case 'email':
      return typeof user.email === 'string' && user.email.toLowerCase() === key.toLowerCase();
    case 'phone':
      return user.phone === key;
    case 'braze_id':
      return user.braze_id === key;
    default:
      return false;
  }
}
