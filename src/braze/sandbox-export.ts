/**
 * The sandbox's POST /users/export/ids, as documented: `external_ids` or `user_aliases` (up to
 * 50), or one `braze_id`, `email_address` or `phone`; `fields_to_export` limits the fields;
 * ids that match no profile come back in `invalid_user_ids`.
 */
import type { SandboxProfiles } from './sandbox-profiles.js';

export function exportProfiles(
  profiles: SandboxProfiles,
  body: Record<string, unknown>,
): { users: Array<Record<string, unknown>>; invalid: unknown[] } | { error: string } {
  const lookups: Array<{ identity: Record<string, unknown>; invalid: unknown }> = [];
  const externalIds = body.external_ids;
  const aliases = body.user_aliases;
  for (const k of ['braze_id', 'email_address', 'phone'] as const) {
    if (body[k] !== undefined) lookups.push({ identity: { [k === 'email_address' ? 'email' : k]: body[k] }, invalid: body[k] });
  }
  if (Array.isArray(externalIds)) for (const id of externalIds) lookups.push({ identity: { external_id: id }, invalid: id });
  if (Array.isArray(aliases)) for (const a of aliases) lookups.push({ identity: { user_alias: a }, invalid: a });
  if ((Array.isArray(externalIds) && externalIds.length > 50) || (Array.isArray(aliases) && aliases.length > 50)) {
    return { error: 'Too many ids: at most 50 external_ids or user_aliases per request' };
  }
  if (lookups.length === 0) return { error: 'No identifiers given' };
  // braze_id, email_address and phone are single values: one lookup per request.
  if (['braze_id', 'email_address', 'phone'].filter((k) => body[k] !== undefined).length > 1) return { error: 'Give one of braze_id, email_address or phone' };
  const fields = Array.isArray(body.fields_to_export) ? new Set(body.fields_to_export as string[]) : undefined;
  const users: Array<Record<string, unknown>> = [];
  const invalid: unknown[] = [];
  const seen = new Set<string>();
  for (const l of lookups) {
    const p = profiles.find(l.identity);
    if (!p) {
      invalid.push(l.invalid);
      continue;
    }
    if (seen.has(p.braze_id)) continue;
    seen.add(p.braze_id);
    const all: Record<string, unknown> = {
      external_id: p.external_id,
      user_aliases: p.aliases.map((a) => ({ ...a })),
      braze_id: p.braze_id,
      ...structuredClone(p.standard),
      custom_attributes: structuredClone(p.custom),
    };
    if (all.external_id === undefined) delete all.external_id;
    users.push(fields ? Object.fromEntries(Object.entries(all).filter(([k]) => fields.has(k))) : all);
  }
  return { users, invalid };
}
