/**
 * An injected logger with scope fields (run id, audience, S3 key). Lines go to stderr so that
 * stdout stays free for summaries and `--json`. On a TTY lines are readable; otherwise each is
 * one JSON object. Known secrets are scrubbed from every line as a last line of defence; callers
 * must still never pass attribute values or keys to it.
 */

export type LogLevel = 'debug' | 'info' | 'warn' | 'error' | 'silent';
const order: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40, silent: 99 };

export type LogFields = Record<string, string | number | boolean | null | undefined>;

export interface Logger {
  debug(message: string, fields?: LogFields): void;
  info(message: string, fields?: LogFields): void;
  warn(message: string, fields?: LogFields): void;
  error(message: string, fields?: LogFields): void;
  /** A logger that adds `fields` to every line. */
  child(fields: LogFields): Logger;
}

export interface LoggerOptions {
  level?: LogLevel;
  /** Human-readable lines instead of JSON. Defaults to whether the stream is a TTY. */
  pretty?: boolean;
  stream?: NodeJS.WritableStream & { isTTY?: boolean };
  /** Strings that must never appear in output (API keys, passwords). */
  secrets?: readonly string[];
  clock?: () => Date;
}

export function createLogger(options: LoggerOptions = {}, scope: LogFields = {}): Logger {
  const stream = options.stream ?? process.stderr;
  const level = options.level ?? 'info';
  const pretty = options.pretty ?? Boolean(stream.isTTY);
  const secrets = (options.secrets ?? []).filter((s) => s.length >= 4);
  const clock = options.clock ?? (() => new Date());

  const scrub = (text: string): string => secrets.reduce((t, s) => t.split(s).join('[redacted]'), text);

  const write = (lvl: Exclude<LogLevel, 'silent'>, message: string, fields?: LogFields) => {
    if (order[lvl] < order[level]) return;
    const all = { ...scope, ...fields };
    let line: string;
    if (pretty) {
      const extras = Object.entries(all)
        .filter(([, v]) => v !== undefined)
        .map(([k, v]) => `${k}=${v}`)
        .join(' ');
      line = `${clock().toISOString().slice(11, 19)} ${lvl.toUpperCase().padEnd(5)} ${message}${extras ? `  ${extras}` : ''}`;
    } else {
      line = JSON.stringify({ level: lvl, time: clock().toISOString(), msg: message, ...all });
    }
    stream.write(`${scrub(line)}\n`);
  };

  return {
    debug: (m, f) => write('debug', m, f),
    info: (m, f) => write('info', m, f),
    warn: (m, f) => write('warn', m, f),
    error: (m, f) => write('error', m, f),
    child: (fields) => createLogger(options, { ...scope, ...fields }),
  };
}

/** A logger that drops everything (library default, tests that do not look at logs). */
export const silentLogger: Logger = createLogger({ level: 'silent' });
