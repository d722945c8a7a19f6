/** The seqs a group of confirmed members is recorded by, as runs: exactly those seqs, no other. */
import { expect, test } from 'vitest';
import { runsOf } from '../src/audience/snapshot-store.js';

function expand(runs: { from: string[]; to: string[] }): number[] {
  return runs.from.flatMap((f, i) => Array.from({ length: Number(runs.to[i]) - Number(f) + 1 }, (_, k) => Number(f) + k));
}

test('runs cover exactly the given seqs, in any order and with repeats, and split at every gap', () => {
  expect(runsOf([])).toEqual({ from: [], to: [] });
  expect(runsOf(['5'])).toEqual({ from: ['5'], to: ['5'] });
  expect(runsOf(['3', '1', '2', '2', '7', '9', '8', '11'])).toEqual({ from: ['1', '7', '11'], to: ['3', '9', '11'] });
  let seed = 7;
  const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  for (let round = 0; round < 200; round++) {
    // Batches of consecutive seqs, some members refused, confirmed out of order, as delivery does.
    const seqs: string[] = [];
    for (let b = 0; b < 1 + Math.floor(random() * 20); b++) {
      const start = 1 + Math.floor(random() * 3000);
      for (let k = 0; k < 75; k++) if (random() > 0.05) seqs.push(String(start + k));
    }
    seqs.sort(() => random() - 0.5);
    const want = [...new Set(seqs.map(Number))].sort((a, b) => a - b);
    const runs = runsOf(seqs);
    expect(expand(runs)).toEqual(want);
    for (let i = 1; i < runs.from.length; i++) expect(Number(runs.from[i])).toBeGreaterThan(Number(runs.to[i - 1]) + 1);
  }
});
