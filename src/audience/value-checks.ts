/**
 * Per-member value checks that follow Braze's documented rules, as SQL expressions over a
 * column: string lengths as Braze counts them, and the standard profile fields' formats.
 */
import type { AttributeKind } from '../types.js';

/** A string's length as Braze counts it: UTF-16 code units, so a character beyond U+FFFF counts 2. */
export function utf16Length(text: string): string {
  // Only a UTF-8 database can hold characters beyond U+FFFF; elsewhere the regex would miscount.
  return `(char_length(${text}) + CASE WHEN current_setting('server_encoding') = 'UTF8' THEN char_length(regexp_replace(${text}, '[\\u0001-\\uffff]', '', 'g')) ELSE 0 END)`;
}

/**
 * Whether a string is longer than `max` UTF-16 code units. A character takes at least as many
 * bytes as code units in every server encoding, so a string of at most `max` bytes (nearly
 * every one) is settled by its byte length, without the regex.
 */
export function longerThanUtf16(text: string, max: number): string {
  return `CASE WHEN octet_length(${text}) <= ${max} THEN false ELSE ${utf16Length(text)} > ${max} END`;
}

/**
 * Standard profile fields in their documented formats: a value in another one is stored wrong
 * or dropped by Braze without a word. (Braze's user attributes object page.)
 */
export function standardFieldCheck(name: string, kind: AttributeKind, v: string, check: (cond: string, why: string) => void, wrongType: (why: string) => never): void {
  const text = `${v}::text`;
  const pattern = (re: string, why: string) => (kind === 'string' ? check(`${text} !~ ${sqlString(re)}`, why) : wrongType(`cast it to text (${why})`));
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

function sqlString(s: string): string {
  return `'${s.replace(/'/g, "''")}'`;
}
