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
 * Filters have 16 bits per id and 4 probes, all in one 64-byte block (a cache line: one memory
 * read per filter rather than four; about 0.3% false positives when full). The first holds
 * 8,192 ids in 16 kB, and each next one four times as many, up to 1,048,576 ids in 2 MB: a
 * table of a few events costs kilobytes, and a busy one is checked against a few filters, not
 * dozens. Filters older than the last million or so ids are dropped, so memory stays under
 * 4 MB per table whatever the run loads.
 */
const FIRST_BITS = 17;
const LAST_BITS = 24;
/** Ids kept besides the filter being filled. */
const WINDOW = 1 << 20;

interface Filter {
  bits: Uint8Array;
  /** The number of 64-byte blocks, less one: a mask. */
  blocks: number;
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
    let h1 = 0x811c9dc5;
    let h2 = 0x9747b28c;
    for (let i = 0; i < id.length; i++) {
      const c = id.charCodeAt(i);
      h1 = Math.imul(h1 ^ c, 0x01000193);
      h2 = Math.imul(h2 ^ c, 0x5bd1e995);
      h2 ^= h2 >>> 15;
    }
    return this.note(mix(h1), mix(h2));
  }

  /** seenBefore of the id whose bytes (printable ASCII: the same hashes) are `text` from `from` to `to`. */
  seenBeforeBytes(text: Buffer, from: number, to: number): boolean {
    let h1 = 0x811c9dc5;
    let h2 = 0x9747b28c;
    for (let i = from; i < to; i++) {
      const c = text[i]!;
      h1 = Math.imul(h1 ^ c, 0x01000193);
      h2 = Math.imul(h2 ^ c, 0x5bd1e995);
      h2 ^= h2 >>> 15;
    }
    return this.note(mix(h1), mix(h2));
  }

  /**
   * h1 (FNV-1a) picks the block; the bits in it are h2's (a Murmur-style mix) 27 low bits and
   * h1's 9 high ones, which no block number reaches (2 MB has 2^15 blocks).
   */
  private note(h1: number, h2: number): boolean {
    this.lastHash = h1;
    const b0 = h2 & 511;
    const b1 = (h2 >>> 9) & 511;
    const b2 = (h2 >>> 18) & 511;
    const b3 = h1 >>> 23;
    let seen = false;
    for (let f = this.filters.length - 1; f >= 0 && !seen; f--) {
      const { bits, blocks } = this.filters[f]!;
      const at = (h1 & blocks) << 6;
      seen = isSet(bits, at, b0) && isSet(bits, at, b1) && isSet(bits, at, b2) && isSet(bits, at, b3);
    }
    let current = this.filters[this.filters.length - 1];
    if (!current || current.count >= current.capacity) current = this.next(current);
    const at = (h1 & current.blocks) << 6;
    set(current.bits, at, b0);
    set(current.bits, at, b1);
    set(current.bits, at, b2);
    set(current.bits, at, b3);
    current.count++;
    return seen;
  }

  private next(full: Filter | undefined): Filter {
    const log2 = full ? Math.min(LAST_BITS, Math.log2(full.bits.length * 8) + 2) : FIRST_BITS;
    const filter = { bits: new Uint8Array(1 << (log2 - 3)), blocks: (1 << (log2 - 9)) - 1, capacity: (1 << log2) / 16, count: 0 };
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

const isSet = (bits: Uint8Array, at: number, b: number) => (bits[at + (b >>> 3)]! & (1 << (b & 7))) !== 0;
const set = (bits: Uint8Array, at: number, b: number) => {
  bits[at + (b >>> 3)] = bits[at + (b >>> 3)]! | (1 << (b & 7));
};

function mix(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}
