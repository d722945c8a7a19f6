/**
 * The event ids this process has lately written to one event table, as Bloom filters, so that a
 * file looks up in the table only the ids it may repeat rather than all of them.
 *
 * Why: Currents repeats about 1% of events, mostly in nearby files, which this process has
 * just loaded. Looking every id up in the table's key before the COPY cost a fifth of the
 * COPY's own time on the server, and as much again in round trips. An id not in these filters
 * was not written by this process lately; it is COPYed without a lookup, and if the table
 * held it after all (an earlier run, another process), the COPY fails with a unique violation
 * and that batch is looked up in full (write-events.ts). A false positive (under about 2% of
 * ids) only costs a lookup.
 *
 * Each filter holds 131,072 ids in 256 kB (16 bits per id, 4 probes: 0.24% false positives when
 * full); the last 8 are kept, so about the last million ids of each table are known, in at most
 * 2 MB, whatever the run loads.
 */
const BITS = 21;
const PER_FILTER = 1 << (BITS - 4);
const FILTERS = 8;
const PROBES = 4;
const MASK = (1 << BITS) - 1;

export class RecentIds {
  private readonly filters: Uint8Array[] = [];
  private count = PER_FILTER;

  /**
   * Note that `id` is being written; true when it may have been written before (false
   * positives are possible, never false negatives).
   */
  seenBefore(id: string): boolean {
    const [h1, h2] = hashes(id);
    let seen = false;
    for (const f of this.filters) {
      if (has(f, h1, h2)) {
        seen = true;
        break;
      }
    }
    if (this.count >= PER_FILTER) {
      if (this.filters.length === FILTERS) this.filters.shift();
      this.filters.push(new Uint8Array(1 << (BITS - 3)));
      this.count = 0;
    }
    const f = this.filters[this.filters.length - 1]!;
    for (let i = 0; i < PROBES; i++) {
      const bit = (h1 + i * h2) & MASK;
      f[bit >>> 3] = f[bit >>> 3]! | (1 << (bit & 7));
    }
    this.count++;
    return seen;
  }
}

function has(f: Uint8Array, h1: number, h2: number): boolean {
  for (let i = 0; i < PROBES; i++) {
    const bit = (h1 + i * h2) & MASK;
    if ((f[bit >>> 3]! & (1 << (bit & 7))) === 0) return false;
  }
  return true;
}

/** Two independent 32-bit hashes (FNV-1a and a Murmur-style mix), probed as h1 + i·h2. */
function hashes(s: string): [number, number] {
  let h1 = 0x811c9dc5;
  let h2 = 0x9747b28c;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    h1 = Math.imul(h1 ^ c, 0x01000193);
    h2 = Math.imul(h2 ^ c, 0x5bd1e995);
    h2 ^= h2 >>> 15;
  }
  // Odd h2, so that the probes of one id never fall on the same bit.
  return [mix(h1), mix(h2) | 1];
}

function mix(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}
