/**
 * The client for Braze's `POST /users/track`. It sends one batch of attribute objects and says,
 * per object, whether Braze accepted it. Retries follow what can succeed later (408, 429, 5xx,
 * timeouts, dropped connections) with exponential backoff and full jitter, bounded in attempts
 * and time; everything else is answered at once. 401/403 and exhausted retries abort the run:
 * sending more batches would only fail the same way.
 */
import { AbortError, BrazeHttpError } from '../errors.js';
import type { Logger } from '../log.js';
import type { PostResult } from '../http/post-json.js';
import { withRetries, type Attempt, type RetryStats } from '../http/with-retries.js';
import { retryAfterMs } from '../http/rate-limiter.js';
import { postToBraze, resolveClientOptions, type BrazeClientOptions, type ResolvedClientOptions } from './client-options.js';

export type TrackClientOptions = BrazeClientOptions;

/** What Braze said about one batch: the indices it rejected, with reasons. */
export interface TrackResult {
  failed: Map<number, string>;
}

export type TrackStats = RetryStats;

export class TrackClient {
  readonly stats: TrackStats = { requests: 0, retries: 0, rateLimited: 0 };
  private readonly url: URL;
  private readonly o: ResolvedClientOptions;

  constructor(private readonly options: TrackClientOptions) {
    this.url = new URL(`${options.endpoint.replace(/\/+$/, '')}/users/track`);
    this.o = resolveClientOptions(options);
  }

  /** Send `attributes` (JSON objects as text, at most the batch size) and report which Braze rejected. */
  track(attributes: readonly string[]): Promise<TrackResult> {
    const body = `{"attributes":[${attributes.join(',')}]}`;
    return withRetries(this.o, this.stats, () => this.attempt(body, attributes.length), (attempts, seconds, last) =>
      new AbortError(`Braze did not accept a batch after ${attempts} attempts in ${seconds}s (last: ${last}); stopping so that the unconfirmed members are sent by the next run`),
    );
  }

  private async attempt(body: string, count: number): Promise<Attempt<TrackResult>> {
    // Timeouts, resets, refused connections: Braze may or may not have the batch; resend.
    const sent = await postToBraze(this.url, this.options, this.o.timeoutMs, this.stats, body);
    if ('retry' in sent) return { kind: 'retry', reason: sent.retry };
    const { response } = sent;
    const text = response.text;
    const status = response.status;
    const parsed = parseJson(text);
    const message = typeof parsed?.message === 'string' ? parsed.message : text.slice(0, 200).replace(/\s+/g, ' ');

    if (status >= 200 && status < 300) {
      if (parsed?.message !== 'success') {
        return { kind: 'done', result: allFailed(count, `Braze answered ${status} with message "${message}" instead of "success"`) };
      }
      return { kind: 'done', result: { failed: itemErrors(parsed, count, this.o.log) } };
    }
    if (status === 429) {
      const waitMs = retryAfterMs(response.headers, this.o.clock());
      if (waitMs !== undefined) this.options.rateLimiter.pauseUntil(this.o.clock() + waitMs);
      return { kind: 'retry', reason: '429 rate limited', waitMs: waitMs ?? undefined, rateLimited: true };
    }
    if (status === 408 || status >= 500) return { kind: 'retry', reason: `${status} ${message}`, waitMs: retryAfterHeader(response.headers, this.o.clock()) };
    if (status === 401) {
      throw new BrazeHttpError(
        `Braze answered 401 Unauthorized: the API key is wrong, or BRAZE_REST_ENDPOINT (${this.url.host}) is not your workspace's instance`, 401);
    }
    if (status === 403) {
      throw new BrazeHttpError(`Braze answered 403 Forbidden: the API key lacks the users.track permission, or the account is inactive`, 403);
    }
    if (status === 400 && /max input length/i.test(message)) {
      throw new BrazeHttpError(
        `Braze answered 400 "${message}": this workspace accepts fewer objects per request; lower --batch-size (50 for MAU CY 24-25 contracts)`, 400);
    }
    if (status === 404) {
      throw new BrazeHttpError(`Braze answered 404 for ${this.url.origin}${this.url.pathname}: check BRAZE_REST_ENDPOINT (e.g. https://rest.iad-01.braze.com)`, 404);
    }
    return { kind: 'done', result: allFailed(count, `Braze rejected the batch: ${status} ${message}`) };
  }
}

function parseJson(text: string): { message?: unknown; errors?: unknown } | undefined {
  try {
    const v = JSON.parse(text);
    return v && typeof v === 'object' ? v : undefined;
  } catch {
    return undefined;
  }
}

function allFailed(count: number, reason: string): TrackResult {
  return { failed: new Map(Array.from({ length: count }, (_, i) => [i, reason])) };
}

/**
 * `errors[]` of a success answer: each names an index in `attributes` that Braze rejected. An
 * error that names no attribute object we can identify (no index, a string index, out of range,
 * another input array) could be about any member: none of the batch counts as confirmed, so all
 * of it is sent again next run rather than possibly lost.
 */
function itemErrors(parsed: { errors?: unknown }, count: number, log: Logger): Map<number, string> {
  const failed = new Map<number, string>();
  if (parsed.errors === undefined || parsed.errors === null) return failed;
  if (!Array.isArray(parsed.errors)) {
    // errors present but not a list: it may be about any member of the batch.
    const text = JSON.stringify(parsed.errors).slice(0, 200);
    log.warn('Braze answered success with errors that are not a list; none of the batch counts as confirmed', { error: text });
    return allFailed(count, `Braze reported errors it did not attribute to a member (${text}); the batch is sent again next run`).failed;
  }
  for (const e of parsed.errors) {
    const item = (typeof e === 'object' && e ? e : {}) as { type?: unknown; input_array?: unknown; index?: unknown };
    const index = item.index;
    if (Number.isInteger(index) && (index as number) >= 0 && (index as number) < count && (item.input_array === undefined || item.input_array === 'attributes')) {
      failed.set(index as number, `Braze rejected the member: ${String(item.type ?? 'unknown error')}`);
      continue;
    }
    const text = JSON.stringify(e).slice(0, 200);
    log.warn('Braze reported an error that names no attribute object of the batch; none of it counts as confirmed', { error: text });
    return allFailed(count, `Braze reported an error it did not attribute to a member (${text}); the batch is sent again next run`).failed;
  }
  return failed;
}

function retryAfterHeader(headers: PostResult['headers'], now: number): number | undefined {
  return headers.get('retry-after') ? retryAfterMs(headers, now) : undefined;
}
