/**
 * Glossary
 *
 * - **audience**: one `.sql` file; its result rows are the members Braze should hold
 *   attributes for. The file name (without `.sql`) is the audience name.
 * - **member**: one row of an audience, identified by its identifier value (`member_key`).
 * - **attribute**: every result column but the identifier; sent to Braze under its own name.
 * - **snapshot**: per audience and member, what Braze holds of the attributes this audience
 *   owns, as last confirmed; members who left stay while Braze still holds something of ours.
 * - **owner**: the one audience that writes an attribute; two audiences may not write the same one.
 * - **delta**: per member, what must be sent to move Braze from the snapshot to the current
 *   result: new, changed (only the changed attributes), exited (`@on_exit`), unchanged (nothing).
 * - **run**: one execution of a job (sync, backfill, ingest) with a row in the run history.
 * - **data point**: one attribute set (or unset) on one profile; Braze bills per data point.
 */

export type IdentifierKind = 'external_id' | 'braze_id' | 'email' | 'phone' | 'user_alias';
export const identifierKinds: readonly IdentifierKind[] = ['external_id', 'braze_id', 'email', 'phone', 'user_alias'];

/** How a result column is sent to Braze. */
export type AttributeKind = 'boolean' | 'integer' | 'bigint' | 'number' | 'string' | 'date' | 'timestamp' | 'timestamptz' | 'string_array' | 'object';

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
  /**
   * `@update_existing_only`: never create profiles (Braze ignores objects for unknown users and
   * still answers 201). Unset: false, Braze's own default, except for user_alias and braze_id
   * audiences, which Braze only ever updates.
   */
  updateExistingOnly?: boolean;
  /** `@max_change_ratio`: this audience's guardrail, instead of --max-change-ratio. */
  maxChangeRatio?: number;
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
  /** Changed members whose change modifies or removes a value Braze holds (not only adds one). */
  valueChanges: number;
  /** Members sent under @update_existing_only true whose profile is not known to exist (sent again each run). */
  unverified: number;
  /** Attribute updates (data points) in requests Braze accepted. Never a planned figure. */
  updates: number;
  /** Updates per attribute name (data points) Braze accepted. */
  perAttribute: Record<string, number>;
  /** Attribute updates the plan calls for (all of them are sent unless the run stops early). */
  plannedUpdates: number;
  plannedPerAttribute: Record<string, number>;
  requests: number;
  retries: number;
  rateLimited: number;
}

export function emptyCounts(): AudienceCounts {
  return {
    members: 0,
    new: 0,
    changed: 0,
    exited: 0,
    unchanged: 0,
    failed: 0,
    valueChanges: 0,
    unverified: 0,
    updates: 0,
    perAttribute: {},
    plannedUpdates: 0,
    plannedPerAttribute: {},
    requests: 0,
    retries: 0,
    rateLimited: 0,
  };
}
