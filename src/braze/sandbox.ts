/**
 * A local HTTP server that behaves like Braze's documented `POST /users/track`: bearer-key auth
 * (401), the objects-per-request limit (400 "Max Input Length Exceeded"), per-item errors in a
 * success answer, a fixed-window rate limit with X-RateLimit-* headers and 429s, and injectable
 * faults (5xx, slow answers, dropped connections). Its profiles are kept as strictly as Braze
 * keeps them (sandbox-profiles.ts): one profile reachable by several identifiers, update-only
 * objects for unknown users ignored with a 201, standard fields apart from custom attributes,
 * inc/add/remove executed, values of another type ignored. Used by `npm start` and the tests; it
 * is a stand-in for development, never a place to send real data.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { matchingIdentifier, SandboxProfiles } from './sandbox-profiles.js';
import { exportProfiles } from './sandbox-export.js';

export type Fault =
  | { status: number; message?: string; retryAfter?: string }
  | { drop: true }
  | { delayMs: number }
  | { itemErrors: number[]; type?: string }
  /** A success answer whose errors[] are given as is (e.g. without an index): every object is applied. */
  | { rawErrors: unknown[] }
  | { message: string };

export interface SandboxOptions {
  apiKey: string;
  /** Objects per request across attributes, events and purchases. Default 75. */
  maxObjects?: number;
  /** Fixed-window rate limit, like Braze's 3,000 per 3 s. Default: none. */
  rateLimit?: { limit: number; windowMs: number };
  /** Delay before every answer. */
  latencyMs?: number;
  /** Fixed-window rate limit of POST /users/export/ids, apart from /users/track's. Default: none. */
  exportRateLimit?: { limit: number; windowMs: number };
  /** Decide a fault for each request (its number from 1, and its body). */
  faults?: (request: { n: number; attributes: Array<Record<string, unknown>> }) => Fault | undefined;
  clock?: () => number;
}

export interface RecordedRequest {
  n: number;
  /** When the request arrived (the sandbox's clock). */
  at: number;
  status: number;
  attributes: Array<Record<string, unknown>>;
}

export class BrazeSandbox {
  /** The profiles, as Braze would hold them. */
  readonly profiles = new SandboxProfiles();
  /** Data points received per profile, by braze_id (attributes set or unset, in applied objects). */
  readonly updatesByProfile = new Map<string, number>();
  /** Objects Braze would have ignored silently (update-only, unknown user), with a 201 all the same. */
  ignored = 0;
  readonly requests: RecordedRequest[] = [];
  readonly counts = { requests: 0, accepted: 0, rateLimited: 0, rejected: 0 };
  /** POST /users/export/ids: every request's body and status, and the count of 429s. */
  readonly exports: Array<{ at: number; status: number; body: Record<string, unknown> }> = [];
  readonly exportCounts = { requests: 0, rateLimited: 0 };
  /** Decide a fault for an export request (its number from 1): a status to answer instead. */
  exportFaults?: (n: number) => { status: number; retryAfter?: string } | undefined;
  private exportWindow = { start: 0, count: 0 };
  private server?: Server;
  private windowStart = 0;
  private windowCount = 0;
  private readonly clock: () => number;
  private n = 0;
  faults?: SandboxOptions['faults'];

  constructor(private readonly options: SandboxOptions) {
    this.clock = options.clock ?? Date.now;
    this.faults = options.faults;
  }

  /** Listen on loopback; resolves to the base URL (the "REST endpoint"). */
  async start(port = 0): Promise<string> {
    this.server = createServer((req, res) => {
      this.handle(req, res).catch(() => {
        if (!res.headersSent) res.writeHead(500).end();
      });
    });
    await new Promise<void>((resolve) => this.server!.listen(port, '127.0.0.1', resolve));
    return this.url;
  }

  get url(): string {
    const address = this.server?.address() as AddressInfo | undefined;
    if (!address) throw new Error('sandbox not started');
    return `http://127.0.0.1:${address.port}`;
  }

  async stop(): Promise<void> {
    if (!this.server) return;
    this.server.closeAllConnections();
    await new Promise((resolve) => this.server!.close(resolve));
    this.server = undefined;
  }

  /** Forget profiles, requests and counts (between tests). */
  reset(): void {
    this.profiles.clear();
    this.updatesByProfile.clear();
    this.ignored = 0;
    this.requests.length = 0;
    Object.assign(this.counts, { requests: 0, accepted: 0, rateLimited: 0, rejected: 0 });
    this.n = 0;
    this.windowCount = 0;
    this.exports.length = 0;
    Object.assign(this.exportCounts, { requests: 0, rateLimited: 0 });
    this.exportWindow = { start: 0, count: 0 };
    this.exportFaults = undefined;
  }

  /** What the profile reached by e.g. `{ external_id: 'c1' }` holds (standard fields and custom attributes). */
  profile(identity: Record<string, unknown>): Record<string, unknown> | undefined {
    return this.profiles.view(identity);
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const n = ++this.n;
    this.counts.requests++;
    const send = (status: number, body: object, headers: Record<string, string> = {}) => {
      this.requests.push({ n, at: this.clock(), status, attributes: attributesOf(parsed) });
      res.writeHead(status, { 'content-type': 'application/json', ...this.rateHeaders(), ...headers });
      res.end(JSON.stringify(body));
    };
    let parsed: unknown;
    if (req.method === 'POST' && req.url === '/users/export/ids') return this.handleExport(req, Buffer.concat(chunks).toString('utf8'), res);
    if (req.method !== 'POST' || req.url !== '/users/track') return send(404, { message: 'Not Found' });
    if (req.headers.authorization !== `Bearer ${this.options.apiKey}`) return send(401, { message: 'Invalid API Key' });

    // The rate limit counts every authenticated request, as Braze's does.
    if (this.options.rateLimit) {
      const { limit, windowMs } = this.options.rateLimit;
      const now = this.clock();
      const start = now - (now % windowMs);
      if (start !== this.windowStart) {
        this.windowStart = start;
        this.windowCount = 0;
      }
      this.windowCount++;
      if (this.windowCount > limit) {
        this.counts.rateLimited++;
        return send(429, { message: 'Too Many Requests' });
      }
    }
    try {
      parsed = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch {
      return send(400, { message: 'Invalid JSON' });
    }
    const attributes = attributesOf(parsed);
    const body = parsed as { events?: unknown[]; purchases?: unknown[] };
    const total = attributes.length + (body.events?.length ?? 0) + (body.purchases?.length ?? 0);
    if (total > (this.options.maxObjects ?? 75)) return send(400, { message: 'Max Input Length Exceeded', errors: [] });

    const fault = this.faults?.({ n, attributes });
    if (fault && 'drop' in fault) {
      this.requests.push({ n, at: this.clock(), status: 0, attributes });
      req.socket.destroy();
      return;
    }
    if (fault && 'delayMs' in fault) await sleep(fault.delayMs);
    if (this.options.latencyMs) await sleep(this.options.latencyMs);
    if (res.destroyed) return; // the client gave up (timeout): Braze may still have applied it; we do not.
    if (fault && 'status' in fault) {
      this.counts.rejected++;
      return send(fault.status, { message: fault.message ?? 'Internal Server Error' }, fault.retryAfter ? { 'retry-after': fault.retryAfter } : {});
    }
    if (fault && 'message' in fault) return send(201, { message: fault.message });
    if (fault && 'rawErrors' in fault) {
      for (const object of attributes) if (!this.validate(object)) this.apply(object);
      return send(201, { message: 'success', errors: fault.rawErrors });
    }

    const errors: Array<{ type: string; input_array: string; index: number }> = [];
    const forced = new Set(fault && 'itemErrors' in fault ? fault.itemErrors : []);
    attributes.forEach((object, index) => {
      const reason = forced.has(index) ? ((fault as { type?: string }).type ?? "'external_id' is invalid") : this.validate(object);
      if (reason) {
        errors.push({ type: reason, input_array: 'attributes', index });
        return;
      }
      this.apply(object);
    });
    this.counts.accepted += attributes.length - errors.length;
    send(201, errors.length > 0 ? { message: 'success', attributes_processed: attributes.length - errors.length, errors } : { message: 'success', attributes_processed: attributes.length });
  }

  /**
   * `POST /users/export/ids` as documented: `external_ids` or `user_aliases` (up to 50), or one
   * `braze_id`, `email_address` or `phone`; `fields_to_export` limits the fields; ids matching no
   * profile are listed in `invalid_user_ids`. Its own rate limit, with the same headers and 429.
   */
  private handleExport(req: IncomingMessage, text: string, res: ServerResponse): void {
    const n = ++this.exportCounts.requests;
    let body: Record<string, unknown> = {};
    const at = this.clock();
    const send = (status: number, answer: object, headers: Record<string, string> = {}) => {
      this.exports.push({ at, status, body });
      res.writeHead(status, { 'content-type': 'application/json', ...headers });
      res.end(JSON.stringify(answer));
    };
    if (req.headers.authorization !== `Bearer ${this.options.apiKey}`) return send(401, { message: 'Invalid API Key' });
    const limit = this.options.exportRateLimit;
    let headers: Record<string, string> = {};
    if (limit) {
      const start = at - (at % limit.windowMs);
      if (start !== this.exportWindow.start) this.exportWindow = { start, count: 0 };
      this.exportWindow.count++;
      headers = {
        'x-ratelimit-limit': String(limit.limit),
        'x-ratelimit-remaining': String(Math.max(0, limit.limit - this.exportWindow.count)),
        'x-ratelimit-reset': String(Math.ceil((start + limit.windowMs) / 1000)),
      };
      if (this.exportWindow.count > limit.limit) {
        this.exportCounts.rateLimited++;
        return send(429, { message: 'Too Many Requests' }, headers);
      }
    }
    const fault = this.exportFaults?.(n);
    if (fault) return send(fault.status, { message: 'Internal Server Error' }, fault.retryAfter ? { ...headers, 'retry-after': fault.retryAfter } : headers);
    try {
      body = JSON.parse(text) as Record<string, unknown>;
    } catch {
      return send(400, { message: 'Invalid JSON' }, headers);
    }
    const answer = exportProfiles(this.profiles, body);
    if ('error' in answer) return send(400, { message: answer.error }, headers);
    const { users, invalid } = answer;
    send(201, { users, ...(invalid.length > 0 ? { invalid_user_ids: invalid } : {}), message: 'success' }, headers);
  }

  private validate(object: Record<string, unknown>): string | undefined {
    if (!matchingIdentifier(object)) return 'missing identifier';
    for (const [k, v] of Object.entries(object)) {
      if (typeof v === 'string' && v.length > 255 && k !== 'user_alias') return `'${k}' is longer than 255 characters`;
    }
    return undefined;
  }

  private apply(object: Record<string, unknown>): void {
    const applied = this.profiles.apply(object);
    if (!applied.applied) {
      this.ignored++;
      return;
    }
    const id = applied.profile.braze_id;
    this.updatesByProfile.set(id, (this.updatesByProfile.get(id) ?? 0) + applied.dataPoints);
  }

  private rateHeaders(): Record<string, string> {
    if (!this.options.rateLimit) return {};
    const { limit, windowMs } = this.options.rateLimit;
    const now = this.clock();
    const start = now - (now % windowMs);
    if (start !== this.windowStart) return { 'x-ratelimit-limit': String(limit), 'x-ratelimit-remaining': String(limit), 'x-ratelimit-reset': String(Math.ceil((start + windowMs) / 1000)) };
    return {
      'x-ratelimit-limit': String(limit),
      'x-ratelimit-remaining': String(Math.max(0, limit - this.windowCount)),
      'x-ratelimit-reset': String(Math.ceil((this.windowStart + windowMs) / 1000)),
    };
  }
}

function attributesOf(parsed: unknown): Array<Record<string, unknown>> {
  const a = (parsed as { attributes?: unknown } | undefined)?.attributes;
  return Array.isArray(a) ? (a as Array<Record<string, unknown>>) : [];
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
