/**
 * Glossary
 *
 * - **audience**: one `.sql` file; its result rows are the members Braze should hold
 *   attributes for. The file name (without `.sql`) is the audience name.
 * - **member**: one row of an audience, identified by its identifier value (`member_key`).
 * - **attribute**: every result column but the identifier; sent to Braze under its own name.
 * - **snapshot**: per audience and member, the attribute values Braze last confirmed.
 * - **delta**: per member, what must be sent to move Braze from the snapshot to the current
 *   result: new, changed (only the changed attributes), exited (`@on_exit`), unchanged (nothing).
 * - **run**: one execution of a job (sync, backfill, ingest) with a row in the run history.
 * - **data point**: one attribute set (or unset) on one profile; Braze bills per data point.
 */

export type IdentifierKind = 'external_id' | 'braze_id' | 'email' | 'phone' | 'user_alias';
export const identifierKinds: readonly IdentifierKind[] = ['external_id', 'braze_id', 'email', 'phone', 'user_alias'];

/** What happens to a member who leaves an audience. */
export type OnExit = { kind: 'unset' } | { kind: 'keep' } | { kind: 'set'; values: Record<string, unknown> };

/** A parsed audience file. */
export interface Audience {
  name: string;
  /** Path of the file, as given (for messages). */
  file: string;
  /** The SELECT, exactly as in the file below the header. */
  sql: string;
  /** 1-based line in the file where `sql` starts. */
  sqlLine: number;
  /** Explicit `@identifier`, if any; otherwise chosen from the columns. */
  identifier?: IdentifierKind;
  onExit: OnExit;
  updateExistingOnly: boolean;
  schedule?: string;
  timezone?: string;
}

/** The counts of one audience's run, as shown in summaries and kept in the run history. */
export interface AudienceCounts {
  members: number;
  new: number;
  changed: number;
  exited: number;
  unchanged: number;
  /** Members not sent or not accepted (validation, per-item errors, failed batches). */
  failed: number;
  /** Attribute updates (data points) in requests Braze accepted (or, when planning, would send). */
  updates: number;
  requests: number;
  retries: number;
  rateLimited: number;
  /** Updates per attribute name (data points). */
  perAttribute: Record<string, number>;
}

export function emptyCounts(): AudienceCounts {
  return { members: 0, new: 0, changed: 0, exited: 0, unchanged: 0, failed: 0, updates: 0, requests: 0, retries: 0, rateLimited: 0, perAttribute: {} };
}
