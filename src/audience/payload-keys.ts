/**
 * The top-level keys of a JSON object given as text, without parsing its values: delivery counts
 * the data points Braze accepted per attribute for every member sent, and a full JSON.parse of
 * each payload would cost more than the rest of the member's handling. The text is PostgreSQL's
 * jsonb output (valid JSON, one object); a key with an escape is decoded exactly.
 */
export function topLevelKeys(json: string): string[] {
  const keys: string[] = [];
  let depth = 0;
  let expectKey = false;
  for (let i = 0; i < json.length; i++) {
    const c = json.charCodeAt(i);
    if (c === 0x22 /* " */) {
      // A string: find its end, skipping escaped characters.
      let j = i + 1;
      let escaped = false;
      while (j < json.length) {
        const d = json.charCodeAt(j);
        if (d === 0x5c /* \ */) {
          escaped = true;
          j += 2;
          continue;
        }
        if (d === 0x22) break;
        j++;
      }
      if (depth === 1 && expectKey) {
        keys.push(escaped ? (JSON.parse(json.slice(i, j + 1)) as string) : json.slice(i + 1, j));
        expectKey = false;
      }
      i = j;
    } else if (c === 0x7b /* { */ || c === 0x5b /* [ */) {
      depth++;
      if (depth === 1) expectKey = c === 0x7b;
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      depth--;
    } else if (c === 0x2c /* , */ && depth === 1) {
      expectKey = true;
    }
  }
  return keys;
}
