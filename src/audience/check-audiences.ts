/**
 * Checks across audiences, before any of them runs:
 *
 * - one attribute, one owner: two audiences in one state schema that write the same attribute
 *   would overwrite each other, and an exit from one would erase what the other delivered. Both
 *   are refused (exit 2), naming the files and the attribute. Owners are the audience files in
 *   the folder (described, not run) and the audiences the state schema knows from other folders
 *   or files since deleted.
 * - orphans: audiences the state schema holds members for, with no file in the folder. Their
 *   attributes stay in Braze until they are retired, so every run says so.
 */
import { existsSync } from 'node:fs';
import { basename } from 'node:path';
import { AudienceError, messageOf } from '../errors.js';
import type { Database } from '../db/pool.js';
import type { Logger } from '../log.js';
import type { Audience } from '../types.js';
import { findAudienceFiles, loadAudience } from './load-audience.js';
import { describeAudience } from './plan-deltas.js';
import { countAudienceRows, knownAudiences, type AudienceRecord } from './snapshot-store.js';

export interface AudienceChecks {
  /** Files refused, with the reason. */
  refused: Map<string, AudienceError>;
  /** Audiences with members in the state schema whose file is gone. */
  orphans: Array<AudienceRecord & { members: number }>;
}

/** The attributes an audience writes: its columns but the identifier, and its @on_exit keys. */
export async function attributesOf(db: Database, audience: Audience, statementTimeoutMs?: number): Promise<string[]> {
  const { member } = await describeAudience(db, db, audience, { statementTimeoutMs });
  return [...member.attributes.map((a) => a.name), ...(audience.onExit.kind === 'set' ? Object.keys(audience.onExit.values) : [])];
}

export async function checkAudiences(db: Database, schema: string, dir: string, log: Logger, statementTimeoutMs?: number): Promise<AudienceChecks> {
  const owners = new Map<string, Array<{ name: string; file: string }>>();
  const claim = (attribute: string, owner: { name: string; file: string }) => {
    const list = owners.get(attribute) ?? [];
    if (!list.some((o) => o.name === owner.name)) list.push(owner);
    owners.set(attribute, list);
  };
  const files = findAudienceFiles(dir);
  const names = new Set(files.map((f) => basename(f, '.sql')));
  const known = await knownAudiences(db, schema);
  for (const file of files) {
    const name = basename(file, '.sql');
    try {
      const audience: Audience = loadAudience(file);
      for (const attribute of await attributesOf(db, audience, statementTimeoutMs)) claim(attribute, { name, file });
    } catch (error) {
      // A file that does not load or describe fails on its own turn, with its own message; what
      // it last wrote still belongs to it.
      log.debug('ownership check: using the attributes last recorded for an audience that does not load', { file, error: messageOf(error) });
      for (const attribute of known.find((r) => r.name === name)?.attributes ?? []) claim(attribute, { name, file });
    }
  }
  for (const record of known) {
    if (names.has(record.name)) continue;
    for (const attribute of record.attributes) claim(attribute, { name: record.name, file: record.file });
  }

  const refused = new Map<string, AudienceError>();
  for (const [attribute, list] of owners) {
    if (list.length < 2) continue;
    for (const owner of list) {
      if (!names.has(owner.name) || refused.has(owner.file)) continue;
      const others = list
        .filter((o) => o.name !== owner.name)
        .map((o) => `${o.name} (${o.file}${names.has(o.name) || existsSync(o.file) ? '' : ', whose file is gone: retire it with braze-bridge retire ' + o.name})`);
      refused.set(
        owner.file,
        new AudienceError(owner.file, `attribute "${attribute}" is also written by ${others.join(', ')}: one attribute, one owner. Remove it from all but one audience, or rename it with AS`),
      );
    }
  }
  // Orphans: their file is gone. An audience synced from another folder sharing this state
  // schema is live there, not an orphan (its attributes still count for the one-owner rule).
  const orphans: AudienceChecks['orphans'] = [];
  for (const record of known.filter((r) => !names.has(r.name) && !existsSync(r.file))) {
    const count = await countAudienceRows(db, schema, record.name);
    if (count.rows > 0) orphans.push({ ...record, members: count.members });
  }
  for (const o of orphans) {
    log.warn(`audience ${o.name} has ${o.members} member(s) in the state schema but no file in ${dir}: its attributes stay in Braze. Restore the file, or run braze-bridge retire ${o.name}`, {
      orphan: o.name,
      members: o.members,
      lastFile: o.file,
    });
  }
  return { refused, orphans };
}
