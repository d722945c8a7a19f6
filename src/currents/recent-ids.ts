/**
 * The event ids this process has lately written to one event table, as Bloom filters, so that a
 * file looks up in the table only the ids it may repeat rather than all of them.
 *
 * Why: Currents repeats about 1% of events, mostly in nearby files, which this process has
 * just loaded. Looking every id up in the table's key before the COPY cost a fifth of the
 * COPY's own time on the server, and as much again in round trips. An id not in these filters
 * was not written by this process lately; it is COPYed without a lookup, and if the table
 * held it after all (an earlier run, another process), the COPY fails with a unique violation
 * and that batch is looked up in full (write-events.ts). A false positive only costs a lookup.
 *
 * Filters have 16 bits per id and 4 probes (0.24% false positives when full). The first holds
 * 8,192 ids in 16 kB, and each next one four times as many, up to 1,048,576 ids in 2 MB: a
 * table of a few events costs kilobytes, and a busy one is checked against a few filters, not
 * dozens. Filters older than the last million or so ids are dropped, so memory stays under
 * 4 MB per table whatever the run loads.
 */
const FIRST_BITS = 17;
const LAST_BITS = 24;
const PROBES = 4;
/** Ids kept besides the filter being filled. */
const WINDOW = 1 << 20;

interface Filter {
  bits: Uint8Array;
  mask: number;
  /** Ids it takes before the next filter starts. */
  capacity: number;
  count: number;
}

export class RecentIds {
  /** Oldest first. */
  private readonly filters: Filter[] = [];
  /** A 32-bit hash of the id `seenBefore` was last given, for the caller's own tables. */
  lastHash = 0;

  /**
   * Note that `id` is being written; true when it may have been written before (false
   * positives are possible, never false negatives).
   */
  seenBefore(id: string): boolean {
    return this.note(...hashes(id));
  }

  /** seenBefore of the id whose bytes (printable ASCII) are `text` from `from` to `to`. */
  seenBeforeBytes(text: Buffer, from: number, to: number): boolean {
    return this.note(...hashBytes(text, from, to));
  }

  private note(h1: number, h2: number): boolean {
    this.lastHash = h1;
    let seen = false;
    for (let f = this.filters.length - 1; f >= 0 && !seen; f--) seen = has(this.filters[f]!, h1, h2);
    let current = this.filters[this.filters.length - 1];
    if (!current || current.count >= current.capacity) current = this.next(current);
    for (let i = 0; i < PROBES; i++) {
      const bit = (h1 + i * h2) & current.mask;
      current.bits[bit >>> 3] = current.bits[bit >>> 3]! | (1 << (bit & 7));
    }
    current.count++;
    return seen;
  }

  private next(full: Filter | undefined): Filter {
    const log2 = full ? Math.min(LAST_BITS, Math.log2(full.mask + 1) + 2) : FIRST_BITS;
    const filter = { bits: new Uint8Array(1 << (log2 - 3)), mask: (1 << log2) - 1, capacity: (1 << log2) / 16, count: 0 };
    this.filters.push(filter);
    let kept = 0;
    for (let f = this.filters.length - 2; f >= 0; f--) {
      kept += this.filters[f]!.count;
      if (kept >= WINDOW) {
        this.filters.splice(0, f);
        break;
      }
    }
    return filter;
  }
}

function has(f: Filter, h1: number, h2: number): boolean {
  for (let i = 0; i < PROBES; i++) {
    const bit = (h1 + i * h2) & f.mask;
    if ((f.bits[bit >>> 3]! & (1 << (bit & 7))) === 0) return false;
  }
  return true;
}

/**
 * Two independent 32-bit hashes (FNV-1a and a Murmur-style mix) of the id's UTF-16 units, probed
 * as h1 + i·h2. hashBytes gives the same for an ASCII id's bytes.
 */
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

function hashBytes(text: Buffer, from: number, to: number): [number, number] {
  let h1 = 0x811c9dc5;
  let h2 = 0x9747b28c;
  for (let i = from; i < to; i++) {
    const c = text[i]!;
    h1 = Math.imul(h1 ^ c, 0x01000193);
    h2 = Math.imul(h2 ^ c, 0x5bd1e995);
    h2 ^= h2 >>> 15;
  }
  return [mix(h1), mix(h2) | 1];
}

function mix(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}
