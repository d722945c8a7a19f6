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
      // A string: jump to its closing quote (one not escaped by an odd run of backslashes).
      let end = json.indexOf('"', i + 1);
      for (;;) {
        let backslashes = 0;
        while (json.charCodeAt(end - 1 - backslashes) === 0x5c) backslashes++;
        if (backslashes % 2 === 0) break;
        end = json.indexOf('"', end + 1);
      }
      if (depth === 1 && expectKey) {
        const slash = json.indexOf('\\', i + 1);
        keys.push(slash !== -1 && slash < end ? (JSON.parse(json.slice(i, end + 1)) as string) : json.slice(i + 1, end));
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
  return keys;
}
