/**
 * An event's occurred_at, to_timestamp("time"), written by Node as ISO 8601 text (UTC) for the
 * COPY: the same instant PostgreSQL computes, for every time in the years 1 to 9999. Outside
 * them PostgreSQL may store a date or refuse the value; such rows are left to it (the staging
 * table's insert computes to_timestamp there, as before). Events of a file share a few days:
 * the date part is computed once per day.
 */

/** Epoch seconds of 0001-01-01 and 9999-12-31 23:59:59 UTC: the years an ISO 8601 text can say. */
const FIRST = -62_135_596_800;
const LAST = 253_402_300_799;

/** A time field's value as whole seconds this module can write; null when null; undefined when only PostgreSQL can say. */
export function isoSeconds(time: unknown): number | null | undefined {
  if (time === null || time === undefined) return null;
  if (typeof time === 'bigint') return time >= BigInt(FIRST) && time <= BigInt(LAST) ? Number(time) : undefined;
  return typeof time === 'number' && Number.isInteger(time) && time >= FIRST && time <= LAST ? time : undefined;
}

/** occurred_at as COPY text: ISO 8601, \N for a null time, undefined when only PostgreSQL can say. */
export function occurredAt(time: unknown): string | undefined {
  const seconds = isoSeconds(time);
  if (seconds === null) return '\\N';
  if (seconds === undefined) return undefined;
  return scratch.toString('latin1', 0, writeIso(scratch, 0, seconds));
}

const scratch = Buffer.alloc(20);

/** Write `seconds` (from isoSeconds) at `at` as the 20 bytes of its ISO 8601 text; returns the offset after. */
export function writeIso(buf: Buffer, at: number, seconds: number): number {
  // Events come in time order, many to a second: the last text is usually the one.
  if (seconds !== lastSeconds) {
    lastSeconds = seconds;
    isoText(lastBytes, 0, seconds);
  }
  for (let i = 0; i < 20; i++) buf[at + i] = lastBytes[i]!;
  return at + 20;
}

let lastSeconds = NaN;
const lastBytes = Buffer.alloc(20);

function isoText(buf: Buffer, at: number, seconds: number): void {
  const r = seconds - dayOf(seconds) * 86400;
  for (let i = 0; i < 11; i++) buf[at + i] = dayBytes[i]!;
  at = two(buf, at + 11, Math.floor(r / 3600));
  buf[at++] = 0x3a;
  at = two(buf, at, Math.floor(r / 60) % 60);
  buf[at++] = 0x3a;
  at = two(buf, at, r % 60);
  buf[at] = 0x5a; // Z
}

let day = NaN;
let dayBytes = Buffer.alloc(11);

/** The day of `seconds`, with dayBytes (YYYY-MM-DDT) set to it. */
function dayOf(seconds: number): number {
  const d = Math.floor(seconds / 86400);
  if (d !== day) {
    day = d;
    dayBytes = Buffer.from(new Date(d * 86_400_000).toISOString().slice(0, 11), 'latin1');
  }
  return d;
}

function two(buf: Buffer, at: number, n: number): number {
  buf[at] = 0x30 + Math.floor(n / 10);
  buf[at + 1] = 0x30 + (n % 10);
  return at + 2;
}
