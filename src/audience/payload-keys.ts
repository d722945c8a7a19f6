/**
 * The top-level keys of a JSON object given as text, without parsing its values: delivery counts
 * the data points Braze accepted per attribute for every member sent, and a full JSON.parse of
 * each payload would cost more than the rest of the member's handling. The text is one JSON
 * object as PostgreSQL wrote it (compact or spaced); a key with an escape is decoded exactly.
 */

/** Calls `onKey(start, end)` for each top-level key: its text between the quotes, json.slice(start, end). */
function scanTopLevelKeys(json: string, onKey: (start: number, end: number) => void): void {
  let depth = 0;
  let expectKey = false;
  for (let i = 0; i < json.length; i++) {
    const c = json.charCodeAt(i);
    if (c === 0x22 /* " */) {
      // A string: jump to its closing quote (one not escaped by an odd run of backslashes).
      let end = json.indexOf('"', i + 1);
      for (;;) {
        let backslashes = 0;
        while (json.charCodeAt(end - 1 - backslashes) === 0x5c) backslashes++;
        if (backslashes % 2 === 0) break;
        end = json.indexOf('"', end + 1);
      }
      if (depth === 1 && expectKey) {
        onKey(i + 1, end);
        expectKey = false;
      }
      i = end;
    } else if (c === 0x7b /* { */ || c === 0x5b /* [ */) {
      depth++;
      if (depth === 1) expectKey = c === 0x7b;
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      depth--;
    } else if (c === 0x2c /* , */ && depth === 1) {
      expectKey = true;
    }
  }
}

/** The key whose text is json.slice(start, end), decoded when it holds an escape. */
function keyAt(json: string, start: number, end: number): string {
  const slash = json.indexOf('\\', start);
  return slash !== -1 && slash < end ? (JSON.parse(json.slice(start - 1, end + 1)) as string) : json.slice(start, end);
}

/** The keys in order: the scanner as a list (what the tests compare with JSON.parse; delivery counts with KeyCounter). */
export function topLevelKeys(json: string): string[] {
  const keys: string[] = [];
  scanTopLevelKeys(json, (start, end) => keys.push(keyAt(json, start, end)));
  return keys;
}

/**
 * Counts top-level keys over many payloads. A payload's keys are compared in place with the
 * keys seen before (an audience writes a handful): no string is made or hashed per key, which
 * was half the cost of counting a million members' attributes.
 */
export class KeyCounter {
  private readonly keys: string[] = [];
  /** Each known key's text as it appears between the quotes (differs from the key when escaped). */
  private readonly raw: string[] = [];
  private readonly counts: number[] = [];
  /** Known keys by the length of their text: only those are compared (a wide audience has many). */
  private readonly byLength = new Map<number, number[]>();
  /** Marked payloads (see addMarked): how many carried every column, and per column the others. */
  private full = 0;
  private readonly perColumn: number[];
  /** The mark of a payload that carries every column. */
  readonly everyColumn: string;
  total = 0;

  /** @param columns the audience's attribute columns, in the order `present` marks them */
  constructor(private readonly columns: readonly string[] = []) {
    this.perColumn = columns.map(() => 0);
    this.everyColumn = '1'.repeat(columns.length);
  }

  /**
   * A payload whose keys are exactly the columns `present` marks '1' (a new member's: see
   * MemberSql.present) is counted from its mark instead of scanned: one comparison when it
   * carries every column (nearly always), one pass over the mark otherwise. Memory stays one
   * number per column. Without a mark of the columns' length, its text is scanned.
   */
  addMarked(json: string, present: string | null): void {
    if (present === null || present.length !== this.columns.length) return this.add(json);
    if (present === this.everyColumn) {
      this.full++;
      this.total += present.length;
      return;
    }
    for (let i = 0; i < present.length; i++) {
      if (present.charCodeAt(i) === 0x31 /* 1 */) {
        this.perColumn[i]!++;
        this.total++;
      }
    }
  }

  add(json: string): void {
    scanTopLevelKeys(json, (start, end) => {
      const length = end - start;
      let same = this.byLength.get(length);
      let k = -1;
      if (same) {
        for (const i of same) {
          if (json.startsWith(this.raw[i]!, start)) {
            k = i;
            break;
          }
        }
      } else {
        same = [];
        this.byLength.set(length, same);
      }
      if (k < 0) {
        // A new key, or one escaped differently: decoded keys are counted together below.
        k = this.raw.length;
        same.push(k);
        this.raw.push(json.slice(start, end));
        this.keys.push(keyAt(json, start, end));
        this.counts.push(0);
      }
      this.counts[k]!++;
      this.total++;
    });
  }

  /** The counts per key (an object without prototype: a key may be named "constructor" or "__proto__"). */
  perKey(): Record<string, number> {
    const out: Record<string, number> = Object.create(null) as Record<string, number>;
    for (const [i, key] of this.keys.entries()) out[key] = (out[key] ?? 0) + this.counts[i]!;
    for (const [i, column] of this.columns.entries()) {
      const n = this.full + this.perColumn[i]!;
      if (n > 0) out[column] = (out[column] ?? 0) + n;
    }
    return out;
  }
}
