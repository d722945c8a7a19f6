/**
 * The error hierarchy. Every error the CLI can show a user is an AppError: its message is one
 * line that says what went wrong and where, and its class says which exit code to use and
 * whether trying again later could help. Errors from libraries are wrapped with `{ cause }`.
 */

/** Exit codes, documented in the README and in `--help`. */
export const ExitCode = {
  ok: 0,
  /** The run finished but some members (or files) failed; they are retried next run. */
  partial: 1,
  /** Bad configuration or a bad audience file: fix the input. */
  config: 2,
  /** Another run of the same audience holds the lock. */
  locked: 3,
  /** Aborted: authentication refused, guardrail tripped, retries exhausted. */
  aborted: 4,
} as const;
export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];

export class AppError extends Error {
  readonly exitCode: ExitCode = ExitCode.aborted;
  /** Whether the same operation may succeed if tried again later. */
  get retryable(): boolean {
    return false;
  }
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

/** The run stopped before sending more (guardrail, auth failure, retries exhausted). */
export class AbortError extends AppError {
  override readonly exitCode = ExitCode.aborted;
}

/** An HTTP answer from Braze that is not success. */
export class BrazeHttpError extends AppError {
  override readonly exitCode = ExitCode.aborted;
  constructor(
    message: string,
    readonly status: number | undefined,
    private readonly canRetry: boolean,
    readonly retryAfterMs?: number,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
  override get retryable(): boolean {
    return this.canRetry;
  }
}

/** Map anything thrown to the exit code the CLI should use. */
export function exitCodeOf(error: unknown): ExitCode {
  return error instanceof AppError ? error.exitCode : ExitCode.aborted;
}

/** The one-line message shown to a user for any error. */
export function messageOf(error: unknown): string {
  if (error instanceof AppError) return error.message;
  if (error instanceof Error) return `${error.name}: ${error.message}`;
  return String(error);
}
