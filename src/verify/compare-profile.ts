/**
 * One member's snapshot against the profile Braze exported, attribute by attribute, with the
 * sync's type rules: numbers numerically (12.50 is 12.5), times as instants (a `Z` and a
 * `+00:00` spelling are one time), arrays by value (Braze keeps an array's duplicates once) and
 * objects by value whatever their key order.
 */
import { STANDARD_FIELDS } from '../braze/standard-fields.js';
import type { ExportedUser } from '../braze/export-client.js';

export type DriftKind = 'changed' | 'missing' | 'unexpected';

/** One attribute that differs: what kind of drift, and what Braze holds (undefined when nothing). */
export interface AttributeDrift {
  attribute: string;
  kind: DriftKind;
  braze: unknown;
}

/**
 * Drifted attributes of one member. `attrs` is what the snapshot says Braze holds; `owned` the
 * attributes the audience writes (a value Braze holds for one of them where the snapshot has
 * none is unexpected). Standard fields are read from the top of the export, the rest from
 * custom_attributes; the identifier the member is keyed by is not compared.
 */
export function compareProfile(attrs: Record<string, unknown>, user: ExportedUser, owned: readonly string[], keyedBy: string): AttributeDrift[] {
  const drift: AttributeDrift[] = [];
  const held = (k: string): unknown => (STANDARD_FIELDS.has(k) ? user[k] : user.custom_attributes?.[k]);
  for (const k of new Set([...Object.keys(attrs), ...owned])) {
    if (k === keyedBy) continue;
    const ours = attrs[k];
    const theirs = held(k);
    const oursSet = ours !== undefined && ours !== null;
    const theirsSet = theirs !== undefined && theirs !== null;
    if (oursSet && !theirsSet) drift.push({ attribute: k, kind: 'missing', braze: undefined });
    else if (!oursSet && theirsSet) drift.push({ attribute: k, kind: 'unexpected', braze: theirs });
    else if (oursSet && theirsSet && !sameValue(ours, theirs)) drift.push({ attribute: k, kind: 'changed', braze: theirs });
  }
  return drift;
}

const TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?$/;

/** Equal under the sync's type rules. */
export function sameValue(a: unknown, b: unknown): boolean {
  if (typeof a === 'number' || typeof b === 'number') return typeof a === 'number' && typeof b === 'number' && a === b;
  if (typeof a === 'string' && typeof b === 'string') {
    if (a === b) return true;
    if (TIME.test(a) && TIME.test(b)) return instant(a) === instant(b);
    return false;
  }
  if (Array.isArray(a) || Array.isArray(b)) {
    if (!Array.isArray(a) || !Array.isArray(b)) return false;
    const x = distinct(a);
    const y = distinct(b);
    return x.length === y.length && x.every((v, i) => sameValue(v, y[i]));
  }
  if (a && b && typeof a === 'object' && typeof b === 'object') {
    const ka = Object.keys(a).filter((k) => (a as Record<string, unknown>)[k] !== undefined);
    const kb = Object.keys(b).filter((k) => (b as Record<string, unknown>)[k] !== undefined);
    if (ka.length !== kb.length) return false;
    return ka.every((k) => k in b && sameValue((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]));
  }
  return a === b;
}

/** Milliseconds since the epoch; a time without a zone is UTC, as the sync writes it. */
function instant(s: string): number {
  return Date.parse(/(Z|[+-]\d{2}:?\d{2})$/.test(s) ? s : `${s}Z`);
}

/** The array as Braze keeps it: each value once, in first-seen order. */
function distinct(values: unknown[]): unknown[] {
  const out: unknown[] = [];
  for (const v of values) if (!out.some((o) => sameValue(o, v))) out.push(v);
  return out;
}
