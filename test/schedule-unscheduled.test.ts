/** schedule says at start which audiences it will never run (no @schedule), and again only when that changes. */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { audienceJobs } from '../src/schedule/audience-jobs.js';
import type { Logger } from '../src/log.js';
import { audienceDir } from './helpers/audiences.js';

function capture(): { log: Logger; warnings: string[] } {
  const warnings: string[] = [];
  const log: Logger = { debug() {}, info() {}, error() {}, warn: (m) => void warnings.push(m), child: () => log };
  return { log, warnings };
}

describe('schedule and audiences without @schedule', () => {
  it('names them once at start, and again when the set changes', () => {
    const dir = audienceDir({
      hourly: '-- @schedule 0 * * * *\nSELECT 1 AS external_id, 2 AS a',
      by_hand: 'SELECT 1 AS external_id, 2 AS b',
    });
    const { log, warnings } = capture();
    const jobs = audienceJobs(dir, async () => {}, log);
    expect(jobs().map((j) => j.id)).toEqual(['hourly']);
    jobs();
    expect(warnings).toEqual([expect.stringMatching(/not scheduled \(no @schedule line\): by_hand/)]);
    writeFileSync(join(dir, 'also_by_hand.sql'), 'SELECT 1 AS external_id, 3 AS c');
    jobs();
    expect(warnings).toHaveLength(2);
    expect(warnings[1]).toMatch(/also_by_hand, by_hand/);
  });
});
