/**
 * The sandbox's user profiles, kept as strictly as Braze keeps them (../shared/BRAZE.md), because
 * a stand-in kinder than Braze hides bugs:
 *
 * - one profile is reachable by several identifiers (external id, braze id, aliases, email,
 *   phone); an object is matched by one of them, in Braze's precedence: external_id, braze_id,
 *   user_alias, then email before phone. The object's other identifier fields are profile fields
 *   being set.
 * - `_update_existing_only: true` (always, for alias objects that do not say false) makes an
 *   object for an unknown user a silent no-op: the request still answers 201 with no error.
 * - standard profile fields (first_name, email, dob, country, …) are kept apart from custom
 *   attributes.
 * - `{"inc": n}`, `{"add": [...]}` and `{"remove": [...]}` are executed as operations.
 * - a value whose type differs from the attribute's existing type is silently ignored; `null`
 *   unsets.
 */
import { STANDARD_FIELDS } from './standard-fields.js';

const IDENTIFIERS = ['external_id', 'braze_id', 'user_alias', 'email', 'phone'] as const;
const CONTROL = new Set(['external_id', 'braze_id', 'user_alias', '_update_existing_only', '_merge_objects', 'push_token_import']);

export interface SandboxProfile {
  braze_id: string;
  external_id?: string;
  aliases: Array<{ alias_name: string; alias_label: string }>;
  /** Standard fields, email and phone included. */
  standard: Record<string, unknown>;
  /** Custom attributes. */
  custom: Record<string, unknown>;
  /** Data points written to this profile. */
  dataPoints: number;
}

export type ApplyResult = { applied: true; profile: SandboxProfile; dataPoints: number } | { applied: false; why: 'unknown user, update only' };

export class SandboxProfiles {
  readonly all: SandboxProfile[] = [];
  private next = 1;

  /** Indexes by identifier (a linear search made a large sync quadratic in the sandbox). */
  private readonly index = new Map<string, SandboxProfile>();

  clear(): void {
    this.all.length = 0;
    this.index.clear();
    this.next = 1;
  }

  get size(): number {
    return this.all.length;
  }

  /** What a profile holds, standard fields and custom attributes together, less the field it was found by. */
  view(identity: Record<string, unknown>): Record<string, unknown> | undefined {
    const by = matchingIdentifier(identity);
    const profile = this.find(identity);
    if (!profile) return undefined;
    const all: Record<string, unknown> = { ...profile.standard, ...profile.custom };
    if (by === 'email' || by === 'phone') delete all[by];
    return all;
  }

  /** The profile an identity (one or more identifier fields) reaches, in Braze's precedence. */
  find(identity: Record<string, unknown>): SandboxProfile | undefined {
    const by = matchingIdentifier(identity);
    if (!by) return undefined;
    return this.lookup(by, identity[by]);
  }

  /** Create a profile directly, as another tool or a person in the dashboard would. */
  create(fields: { external_id?: string; email?: string; phone?: string; alias?: { alias_name: string; alias_label: string } }): SandboxProfile {
    const profile = this.newProfile();
    if (fields.external_id !== undefined) profile.external_id = fields.external_id;
    if (fields.email !== undefined) profile.standard.email = fields.email;
    if (fields.phone !== undefined) profile.standard.phone = fields.phone;
    if (fields.alias) profile.aliases.push(fields.alias);
    this.reindex(profile);
    return profile;
  }

  /** Apply one attributes object as Braze would; an update-only object for an unknown user is ignored. */
  apply(object: Record<string, unknown>): ApplyResult {
    const by = matchingIdentifier(object)!;
    let profile = this.lookup(by, object[by]);
    if (!profile) {
      const updateOnly = object._update_existing_only === true || (by === 'user_alias' && object._update_existing_only !== false) || by === 'braze_id';
      if (updateOnly) return { applied: false, why: 'unknown user, update only' };
      profile = this.newProfile();
      if (by === 'external_id') profile.external_id = String(object.external_id);
      if (by === 'user_alias') profile.aliases.push(object.user_alias as SandboxProfile['aliases'][number]);
      if (by === 'email') profile.standard.email = object.email;
      if (by === 'phone') profile.standard.phone = object.phone;
    }
    let points = 0;
    for (const [key, value] of Object.entries(object)) {
      if (CONTROL.has(key)) continue;
      if (key === by) continue; // the identifier it was found by
      points++;
      const target = STANDARD_FIELDS.has(key) ? profile.standard : profile.custom;
      setValue(target, key, value, object._merge_objects === true);
    }
    profile.dataPoints += points;
    this.reindex(profile);
    return { applied: true, profile, dataPoints: points };
  }

  /** Record the profile under each identifier it has now (a stale entry is checked on lookup). */
  private reindex(profile: SandboxProfile): void {
    this.index.set(`braze_id:${profile.braze_id}`, profile);
    if (profile.external_id !== undefined) this.index.set(`external_id:${profile.external_id}`, profile);
    for (const a of profile.aliases) this.index.set(`user_alias:${a.alias_name}\u0000${a.alias_label}`, profile);
    if (typeof profile.standard.email === 'string') this.index.set(`email:${profile.standard.email.toLowerCase()}`, profile);
    if (profile.standard.phone !== undefined) this.index.set(`phone:${String(profile.standard.phone)}`, profile);
  }

  private lookup(by: (typeof IDENTIFIERS)[number], value: unknown): SandboxProfile | undefined {
    const matches = (p: SandboxProfile): boolean => {
      switch (by) {
        case 'external_id':
          return p.external_id === String(value);
        case 'braze_id':
          return p.braze_id === String(value);
        case 'user_alias': {
          const a = value as { alias_name?: unknown; alias_label?: unknown };
          return p.aliases.some((x) => x.alias_name === a.alias_name && x.alias_label === a.alias_label);
        }
        case 'email':
          return typeof p.standard.email === 'string' && p.standard.email.toLowerCase() === String(value).toLowerCase();
        case 'phone':
          return p.standard.phone === value;
      }
    };
    const key =
      by === 'user_alias'
        ? `user_alias:${(value as { alias_name?: unknown }).alias_name}\u0000${(value as { alias_label?: unknown }).alias_label}`
        : by === 'email'
          ? `email:${String(value).toLowerCase()}`
          : `${by}:${String(value)}`;
    const hit = this.index.get(key);
    return hit && matches(hit) ? hit : undefined;
  }

  /** Delete a profile, as a person in the dashboard would. */
  remove(profile: SandboxProfile): void {
    const i = this.all.indexOf(profile);
    if (i >= 0) this.all.splice(i, 1);
    for (const [key, p] of this.index) if (p === profile) this.index.delete(key);
  }

  /** Add a profile made elsewhere (e.g. a copy of another sandbox's). */
  add(profile: SandboxProfile): void {
    this.all.push(profile);
    this.reindex(profile);
  }

  private newProfile(): SandboxProfile {
    const profile: SandboxProfile = { braze_id: `sandbox-${String(this.next++).padStart(8, '0')}`, aliases: [], standard: {}, custom: {}, dataPoints: 0 };
    this.all.push(profile);
    this.index.set(`braze_id:${profile.braze_id}`, profile);
    return profile;
  }
}

/** Which identifier field Braze matches an object by, or undefined when it has none. */
export function matchingIdentifier(object: Record<string, unknown>): (typeof IDENTIFIERS)[number] | undefined {
  return IDENTIFIERS.find((k) => object[k] !== undefined && object[k] !== null);
}

/** The type Braze gives a value, to ignore values of another type silently. */
function typeOf(value: unknown): string {
  if (Array.isArray(value)) return 'array';
  if (typeof value === 'string' && /^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$/.test(value)) {
    const year = Number(value.slice(0, 4));
    return year <= 3000 ? 'time' : 'string';
  }
  if (typeof value === 'number') return 'number';
  return typeof value;
}

function setValue(target: Record<string, unknown>, key: string, value: unknown, merge: boolean): void {
  const current = target[key];
  if (value === null) {
    delete target[key];
    return;
  }
  if (value && typeof value === 'object' && !Array.isArray(value)) {
    const op = value as Record<string, unknown>;
    const keys = Object.keys(op);
    if (keys.length === 1 && keys[0] === 'inc' && typeof op.inc === 'number') {
      if (current === undefined || typeof current === 'number') target[key] = (typeof current === 'number' ? current : 0) + op.inc;
      return;
    }
    if (keys.every((k) => k === 'add' || k === 'remove') && keys.every((k) => Array.isArray(op[k]))) {
      if (current !== undefined && !Array.isArray(current)) return;
      let list = [...((current as unknown[] | undefined) ?? [])];
      for (const v of (op.add as unknown[] | undefined) ?? []) if (!list.includes(v)) list.push(v);
      list = list.filter((v) => !((op.remove as unknown[] | undefined) ?? []).includes(v));
      target[key] = list;
      return;
    }
    if (current !== undefined && (typeof current !== 'object' || Array.isArray(current) || current === null)) return;
    target[key] = merge && current ? { ...(current as object), ...op } : op;
    return;
  }
  if (current !== undefined && typeOf(current) !== typeOf(value)) return; // silently ignored, as Braze does
  target[key] = Array.isArray(value) ? [...new Set(value)] : value;
}
