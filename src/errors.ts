/**
 * The one error tree and the one outcome model.
 *
 * Every error a user can see is an AppError: its message is one line that says what went wrong
 * and where, and its class says which exit code the run ends with. Errors from libraries are
 * wrapped with `{ cause }`. Every job (sync, plan, backfill, ingest, forward) ends in one
 * `Outcome` from one vocabulary, and `exitCodeFor` is the only place that turns an outcome or an
 * error into an exit code.
 *
 *   AppError                      exit 4 unless a subclass says otherwise
 *   ├─ ConfigError                exit 2  a setting, a credential or the database login is wrong
 *   ├─ AudienceError              exit 2  an audience file is invalid or its query failed
 *   ├─ InterruptedError           exit 143 a wait ended by SIGTERM/SIGINT (the shutdown handler sets 130/143)
 *   ├─ AbortError                 exit 4  the run stopped before sending more (guardrail, retries exhausted)
 *   │  └─ TransientSourceError    exit 4  S3 did not answer; the file stays pending
 *   ├─ BrazeHttpError             exit 4  Braze refused every request the same way (401, 403, 404, 400 size)
 *   ├─ DatabaseError              exit 4  PostgreSQL failed a statement (SQLSTATE kept), or the connection was lost mid-run
 *   ├─ AvroDecodeError            (file)  a Currents file is corrupt; that file fails, the run goes on
 *   ├─ SchemaMismatchError        (file)  a Currents file's field changed type; that file fails
 *   └─ MissingObjectError         (file)  a listed Currents object is gone; that file fails
 *   NetworkError                  (transport) a request failed or timed out; the HTTP clients retry it
 */

/** Exit codes, documented in the README and in `--help`. */
export const ExitCode = {
  ok: 0,
  /** The run finished but some members (or files, or events) failed; they are retried next run. */
  partial: 1,
  /** Bad configuration or a bad audience file: a person must fix the input. */
  config: 2,
  /** Another run of the same audience holds the lock. */
  locked: 3,
  /** Aborted: authentication refused, guardrail tripped, retries exhausted, connection lost. */
  aborted: 4,
  /** Stopped by SIGINT after finishing in-flight work. */
  sigint: 130,
  /** Stopped by SIGTERM after finishing in-flight work. */
  sigterm: 143,
} as const;
export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];

/**
 * How a run ended, the same words for every job, in summaries, `--json`, the run history and
 * metrics. `running` and `abandoned` exist only in the run history (a run in progress, or one
 * whose process died and was found by a later run).
 */
export type Outcome = 'succeeded' | 'planned' | 'partial' | 'failed' | 'locked' | 'aborted' | 'interrupted';
export type RunStatus = Outcome | 'running' | 'abandoned';

const outcomeCodes: Record<Outcome, ExitCode> = {
  succeeded: ExitCode.ok,
  planned: ExitCode.ok,
  partial: ExitCode.partial,
  failed: ExitCode.config,
  locked: ExitCode.locked,
  aborted: ExitCode.aborted,
  // A stop without a known signal; with a signal, the shutdown handler says 130 or 143.
  interrupted: ExitCode.aborted,
};

/** The exit code for an outcome, or for anything thrown. The only such mapping. */
export function exitCodeFor(subject: Outcome | unknown): ExitCode {
  if (typeof subject === 'string' && subject in outcomeCodes) return outcomeCodes[subject as Outcome];
  return subject instanceof AppError ? subject.exitCode : ExitCode.aborted;
}

/** The outcome of a run that ended by throwing: input to fix (failed) or stopped (aborted). */
export function outcomeOfError(error: unknown): Outcome {
  return exitCodeFor(error) === ExitCode.config ? 'failed' : 'aborted';
}

/** When several runs (audiences) end differently, the code that needs attention most wins. */
const precedence: ExitCode[] = [ExitCode.aborted, ExitCode.config, ExitCode.locked, ExitCode.partial, ExitCode.ok];
export function combineExitCodes(codes: readonly ExitCode[]): ExitCode {
  return precedence.find((c) => codes.includes(c)) ?? codes.find((c) => !precedence.includes(c)) ?? ExitCode.ok;
}

export class AppError extends Error {
  readonly exitCode: ExitCode = ExitCode.aborted;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** A setting is missing or invalid. Lists every problem at once. */
export class ConfigError extends AppError {
  override readonly exitCode = ExitCode.config;
  constructor(readonly problems: readonly string[], options?: { cause?: unknown }) {
    super(problems.length === 1 ? problems[0]! : `${problems.length} configuration problems: ${problems.join('; ')}`, options);
  }
}

/** An audience file is invalid or its query failed. Names the file and, where known, the line. */
export class AudienceError extends AppError {
  override readonly exitCode = ExitCode.config;
  constructor(
    readonly file: string,
    detail: string,
    readonly line?: number,
    options?: { cause?: unknown },
  ) {
    super(`${file}${line ? `:${line}` : ''}: ${detail}`, options);
  }
}

/** The run stopped before sending more (guardrail, retries exhausted, access refused). */
export class AbortError extends AppError {
  override readonly exitCode = ExitCode.aborted;
}

/** An HTTP answer from Braze that would repeat for every request (401, 403, 404, 400 size). */
export class BrazeHttpError extends AppError {
  override readonly exitCode = ExitCode.aborted;
  constructor(
    message: string,
    readonly status: number,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** An error reported by PostgreSQL, with its SQLSTATE and the 1-based character position. */
export class DatabaseError extends AppError {
  constructor(
    message: string,
    readonly code: string | undefined,
    readonly position: number | undefined,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/**
 * A wait (retry, rate-limit pause, backoff) ended because the process was asked to stop: the
 * work it held is not done and is picked up by the next run. Not a failure of the run.
 */
export class InterruptedError extends AppError {
  override readonly exitCode = ExitCode.sigterm;
}

/** S3 (or the local folder) did not answer: the file is left pending for the next try. */
export class TransientSourceError extends AbortError {}

/** A Currents object was listed once but is gone: it can never be loaded, so the file fails. */
export class MissingObjectError extends AppError {}

/** A Currents file is not a readable Avro container (corrupt, truncated, unknown codec). */
export class AvroDecodeError extends AppError {
  constructor(
    message: string,
    /** 0-based index of the record being read when it failed, if known. */
    readonly recordIndex?: number,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** A Currents file's field has another type than the event table's column. */
export class SchemaMismatchError extends AppError {}

/** A network failure or timeout: the request may or may not have reached the server. */
export class NetworkError extends Error {
  constructor(
    message: string,
    readonly code: string,
  ) {
    super(message);
    this.name = 'NetworkError';
  }
}

/** The one-line message shown to a user for any error. */
export function messageOf(error: unknown): string {
  if (error instanceof AppError) return error.message;
  if (error instanceof Error) return `${error.name}: ${error.message}`;
  return String(error);
}
