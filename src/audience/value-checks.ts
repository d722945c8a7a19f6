/**
 * Per-member value rules that follow Braze's documented rules, as SQL expressions over a
 * column: each attribute kind's JSON value and checks (with the cheap test that covers them),
 * string lengths as Braze counts them, and the standard profile fields' formats.
 */
import { sqlLiteral } from '../db/pool.js';
import type { AttributeKind } from '../types.js';

/** A string's length as Braze counts it: UTF-16 code units, so a character beyond U+FFFF counts 2. */
export function utf16Length(text: string): string {
  // Only a UTF-8 database can hold characters beyond U+FFFF; elsewhere the regex would miscount.
  return `(char_length(${text}) + CASE WHEN current_setting('server_encoding') = 'UTF8' THEN char_length(regexp_replace(${text}, ${sqlLiteral('[\\u0001-\\uffff]')}, '', 'g')) ELSE 0 END)`;
}

/**
 * Whether a string is longer than `max` UTF-16 code units. A character takes at least as many
 * bytes as code units in every server encoding, so a string of at most `max` bytes (nearly
 * every one) is settled by its byte length, without the regex.
 */
export function longerThanUtf16(text: string, max: number): string {
  return `CASE WHEN octet_length(${text}) <= ${max} THEN false ELSE ${utf16Length(text)} > ${max} END`;
}

const MAX_SAFE = '9007199254740991';
/** Keys Braze reads as operations on the attribute rather than as the value. */
const OPERATION_KEYS = ['inc', 'add', 'remove', '$add', '$remove', '$update', '$identifier_key', '$identifier_value', '$new_object'];

/** How one attribute column is sent and checked (see columnRules). */
export interface ColumnRules {
  /** The value as JSON text (never NULL unless absent; valid JSON even for a value that fails a check). */
  value: string;
  /** True when the attribute is left out of the member's JSON (NULL, JSON null). */
  absent: string;
  /** A cheap test that is true whenever any of the column's checks is; none when it has no checks. */
  suspect?: string;
}

/**
 * One attribute column of `kind`, as SQL over `v` (and `j`, the column as jsonb, and `text`,
 * that jsonb's text, for an object): its JSON value, when it is left out, and its checks, each
 * given to `check` with the reason Braze would refuse or misread the value. The cheap test lets
 * a valid member skip the checks (member-sql.ts).
 */
export function columnRules(
  kind: AttributeKind,
  v: string,
  j: string,
  { maxArray, float, text = `${j}::text` }: { maxArray: number; float: boolean; text?: string },
  check: (cond: string, why: string) => void,
): ColumnRules {
  let value = v;
  let absent = `${v} IS NULL`;
  let suspect: string | undefined;
  const pair = (val: string, whenAbsent = `${v} IS NULL`) => {
    value = val;
    absent = whenAbsent;
  };
  switch (kind) {
    case 'boolean':
      pair(`CASE WHEN ${v} THEN 'true' ELSE 'false' END`);
      break;
    case 'integer':
      pair(`${v}::text`);
      break;
    case 'bigint':
      pair(`${v}::text`);
      suspect = `${v} > ${MAX_SAFE} OR ${v} < -${MAX_SAFE}`;
      // Compared, not abs(): abs() of the smallest bigint overflows and would fail the whole audience.
      check(`${v} > ${MAX_SAFE} OR ${v} < -${MAX_SAFE}`, 'integer beyond ±2^53 cannot be sent as an exact JSON number (cast it to text)');
      break;
    case 'number':
      // NaN sorts above every number and infinity beyond every bound, in numeric and float alike.
      suspect = `${v} > ${MAX_SAFE} OR ${v} < -${MAX_SAFE}`;
      // A number's text is a JSON number, except NaN and the infinities: to_json quotes those
      // (the member fails its check anyway). A float's text may take an exponent (1e+07, and -0):
      // through numeric it is written out in full, as Braze has always been sent it.
      pair(`CASE WHEN ${suspect} THEN to_json(${v})::text ELSE ${float ? `${v}::text::numeric::text` : `${v}::text`} END`);
      check(`${v}::text IN ('NaN', 'Infinity', '-Infinity')`, 'NaN or infinity is not a JSON number');
      // Beyond ±2^53 a number is no longer an exact integer in Braze (a double), whatever its type here.
      check(`${v}::text NOT IN ('NaN', 'Infinity', '-Infinity') AND (${v} > ${MAX_SAFE} OR ${v} < -${MAX_SAFE})`, 'number beyond ±2^53 cannot be sent exactly (cast it to text)');
      break;
    case 'string':
      pair(`to_json(${v}::text)::text`);
      suspect = `octet_length(${v}::text) > 255`;
      check(longerThanUtf16(`${v}::text`, 255), 'longer than 255 characters as Braze counts them (UTF-16 code units)');
      break;
    case 'date':
      // An infinite date is left out (to_char gives NULL for it; the member fails its check anyway).
      pair(`'"' || to_char(${v}, 'YYYY-MM-DD') || '"'`, `${v} IS NULL OR NOT isfinite(${v})`);
      // Infinity and -infinity lie beyond both bounds.
      suspect = `${v} < date '0001-01-01' OR ${v} > date '3000-12-31'`;
      check(`NOT isfinite(${v})`, 'infinite date');
      check(`isfinite(${v}) AND (${v} < date '0001-01-01' OR ${v} > date '3000-12-31')`, 'year outside 0001–3000 (Braze would store it as a string, or lose the era)');
      break;
    case 'timestamp':
    case 'timestamptz': {
      const utc = kind === 'timestamptz' ? `(${v} AT TIME ZONE 'UTC')` : v;
      pair(`'"' || to_char(${utc}, 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') || '"'`, `${v} IS NULL OR NOT isfinite(${v})`);
      const bound = (t: string) => (kind === 'timestamptz' ? `timestamptz '${t}+00'` : `timestamp '${t}'`);
      suspect = `${v} < ${bound('0001-01-01 00:00:00')} OR ${v} >= ${bound('3001-01-01 00:00:00')}`;
      check(`NOT isfinite(${v})`, 'infinite timestamp');
      check(`isfinite(${v}) AND (${utc} < timestamp '0001-01-01' OR ${utc} >= timestamp '3001-01-01')`, 'year outside 0001–3000 (Braze would store it as a string, or lose the era)');
      break;
    }
    case 'string_array':
      // A multi-dimensional array or a NULL element is still valid JSON (the member fails its check).
      pair(`to_json(${v}::text[])::text`);
      // array_position fails on a multi-dimensional array: the CASE keeps it from one.
      suspect = `CASE WHEN array_ndims(${v}) > 1 THEN true ELSE cardinality(${v}) > ${maxArray} OR array_position(${v}::text[], NULL) IS NOT NULL
                      OR octet_length(array_to_string(${v}::text[], '')) > 255 END`;
      check(`array_ndims(${v}) > 1`, 'multi-dimensional array (Braze arrays hold strings)');
      // Each check guards itself: array_position fails outright on a multi-dimensional array.
      check(`CASE WHEN array_ndims(${v}) > 1 THEN false ELSE array_position(${v}::text[], NULL) IS NOT NULL END`, 'array contains NULL');
      check(`CASE WHEN array_ndims(${v}) > 1 THEN false ELSE cardinality(${v}) > ${maxArray} END`, `array longer than ${maxArray} items (--max-array-length; Braze keeps no more)`);
      // The elements' bytes together bound each element's length: only an array of more than 255
      // bytes in all is looked at element by element.
      check(
        `CASE WHEN array_ndims(${v}) > 1 OR octet_length(array_to_string(${v}::text[], '')) <= 255 THEN false ELSE EXISTS (SELECT 1 FROM unnest(${v}::text[]) AS e(s) WHERE ${longerThanUtf16('e.s', 255)}) END`,
        'array element longer than 255 characters',
      );
      break;
    case 'object': {
      // A JSON null is left out like a NULL; NULLs nested inside the object stay.
      pair(text, `${j} IS NULL OR jsonb_typeof(${j}) = 'null'`);
      const isObject = `coalesce(jsonb_typeof(${j}) = 'object', false)`;
      if (j !== `${v}::jsonb`) check(`strpos(${v}::text, ${sqlLiteral('\\u0000')}) > 0`, 'JSON holds \\u0000, which Braze (and jsonb) cannot store');
      check(`jsonb_typeof(${j}) NOT IN ('object', 'null')`, 'JSON value is not an object (nested attributes are objects)');
      // A json column's own text may differ from its jsonb text (spacing, duplicate keys).
      check(`octet_length(${j === `${v}::jsonb` ? text : `${v}::text`}) > 102400`, 'JSON object larger than 100 KB (Braze limit)');
      check(
        `CASE WHEN ${isObject} THEN ${j} ?| ARRAY[${OPERATION_KEYS.map(sqlLiteral).join(', ')}] ELSE false END`,
        'JSON object has a key Braze reads as an operation (inc, add, remove, $add, …), not as a value',
      );
      // The path queries walk every nested key; a cheap test on the object's text settles nearly
      // every member first. Without a backslash in the text no quote is escaped, so quotes
      // alternate opening and closing strings: the pattern skips whole strings from the start
      // and matches only if some string (a key or a value) holds a space, "." or "$". Only
      // then can a key hold one, and the exact path query decides. A key of 256 characters
      // needs 256 bytes.
      check(
        `CASE WHEN NOT ${isObject} THEN false
              WHEN strpos(${text}, chr(92)) = 0 AND ${text} !~ '^([^"]*"[^"]*")*[^"]*"[^"]*[ .$]' THEN false
              ELSE jsonb_path_exists(${j}, 'strict $.** ? (@.type() == "object").keyvalue() ? (@.key like_regex "[ .$]" && @.key != "$time")') END`,
        'nested key with a space, "." or "$" (Braze refuses them)',
      );
      check(
        `CASE WHEN NOT ${isObject} OR octet_length(${text}) < 256 THEN false ELSE jsonb_path_exists(${j}, 'strict $.** ? (@.type() == "object").keyvalue() ? (@.key like_regex "^.{128}.{128}")') END`,
        'nested key longer than 255 characters',
      );
      // The object's text: 256 bytes or more (what the size and key-length checks need), or,
      // skipping whole strings from the start, a string holding a space, ".", "$" or a
      // backslash (a backslash ends the skipping, so an escaped quote cannot misalign it; an
      // E'' literal, so the backslashes mean the same whatever standard_conforming_strings). A
      // bounded repetition such as .{128} in the pattern would cost ten times the rest. A
      // json column's own text may differ from its jsonb text: every check runs for it.
      suspect =
        j === `${v}::jsonb`
          ? `CASE WHEN jsonb_typeof(${j}) = 'object'
                  THEN ${j} ?| ARRAY[${OPERATION_KEYS.map(sqlLiteral).join(', ')}] OR octet_length(${text}) > 255
                       OR ${text} ~ E'^([^"\\\\\\\\]*"[^"\\\\\\\\]*")*[^"\\\\\\\\]*"[^"\\\\\\\\]*[ .$\\\\\\\\]'
                  ELSE jsonb_typeof(${j}) <> 'null' END`
          : `${v} IS NOT NULL`;
      break;
    }
  }
  return { value, absent, suspect };
}

/**
 * Standard profile fields in their documented formats: a value in another one is stored wrong
 * or dropped by Braze without a word. (Braze's user attributes object page.)
 */
export function standardFieldCheck(name: string, kind: AttributeKind, v: string, check: (cond: string, why: string) => void, wrongType: (why: string) => never): void {
  const text = `${v}::text`;
  const pattern = (re: string, why: string) => (kind === 'string' ? check(`${text} !~ ${sqlLiteral(re)}`, why) : wrongType(`cast it to text (${why})`));
  switch (name) {
    case 'dob':
      if (kind !== 'date') pattern('^[0-9]{4}-[0-9]{2}-[0-9]{2}$', 'dob is a date, YYYY-MM-DD');
      break;
    case 'gender':
      pattern('^[MFONP]$', 'gender is one of M, F, O, N, P');
      break;
    case 'country':
      pattern('^[A-Z]{2}$', 'country is an ISO 3166-1 alpha-2 code such as DE');
      break;
    case 'language':
      pattern('^[a-z]{2}$', 'language is an ISO 639-1 code such as de');
      break;
    case 'email_subscribe':
    case 'push_subscribe':
      pattern('^(opted_in|unsubscribed|subscribed)$', `${name} is opted_in, unsubscribed or subscribed`);
      break;
    case 'email':
      pattern('^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$', 'email is an email address');
      break;
    case 'phone':
      pattern('^\\+[1-9][0-9]{6,14}$', 'phone is in E.164 form (+ and 7 to 15 digits)');
      break;
    case 'time_zone':
      if (kind === 'string') // NOT IN an uncorrelated list: hashed once per statement, not a scan of the zones per member.
        check(`${text} NOT IN (SELECT name FROM pg_timezone_names WHERE name IS NOT NULL)`, 'time_zone is an IANA time zone such as Europe/Berlin');
      else wrongType('cast it to text (an IANA time zone such as Europe/Berlin)');
      break;
    case 'email_open_tracking_disabled':
    case 'email_click_tracking_disabled':
      if (kind !== 'boolean') wrongType('it must be boolean');
      break;
    case 'date_of_first_session':
    case 'date_of_last_session':
    case 'marked_email_as_spam_at':
      if (kind !== 'timestamp' && kind !== 'timestamptz' && kind !== 'date') wrongType('it must be a date or timestamp');
      break;
  }
}

