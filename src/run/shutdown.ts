/**
 * Graceful shutdown for every command. The first SIGTERM or SIGINT stops new work from
 * starting (batches, files, scheduled runs) and lets what is in flight finish and be
 * recorded, for at most --shutdown-timeout; a second signal, or the timeout, exits at once.
 * Either way the state stays consistent, because it only ever advances on proof. Waits do not
 * count as in-flight work: every sleep in src/http ends at once on the first signal.
 */
import { ExitCode } from '../errors.js';
import type { Logger } from '../log.js';

export interface Shutdown {
  /** Aborted on the first signal. */
  readonly signal: AbortSignal;
  /** The exit code the process should end with after a signal: 130 (SIGINT) or 143 (SIGTERM). */
  readonly exitCode: number | undefined;
  dispose(): void;
}

const CODES: Record<string, number> = { SIGINT: ExitCode.sigint, SIGTERM: ExitCode.sigterm };

let current: AbortSignal = new AbortController().signal;

/**
 * The stop signal of the shutdown installed in this process (one that never aborts when none
 * is). Every sleep of the shared HTTP layer (src/http: retry waits, rate-limit pauses, backoff)
 * ends at once when it aborts, without each job having to pass it down.
 */
export function processStop(): AbortSignal {
  return current;
}

export function installShutdown(log: Logger, timeoutMs: number, exit: (code: number) => void = (c) => process.exit(c)): Shutdown {
  const controller = new AbortController();
  let exitCode: number | undefined;
  let timer: NodeJS.Timeout | undefined;
  const onSignal = (name: NodeJS.Signals) => {
    const code = CODES[name] ?? ExitCode.sigterm;
    if (controller.signal.aborted) {
      log.warn('second signal: exiting now', { signal: name });
      exit(code);
      return;
    }
    exitCode = code;
    log.warn(`${name}: finishing in-flight work, then stopping (up to ${Math.round(timeoutMs / 1000)} s; send again to stop now)`, { signal: name });
    controller.abort(name);
    timer = setTimeout(() => {
      log.error('shutdown timeout reached: exiting with work in flight (it is retried next run)');
      exit(code);
    }, timeoutMs);
    timer.unref();
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  current = controller.signal;
  // Started behind a wrapper (npx, a shell) that alone got the signal and exited: we were
  // re-parented. Stop as if signalled rather than keep sending as an orphan.
  const parent = process.ppid;
  const watchdog = setInterval(() => {
    if (parent > 1 && process.ppid !== parent && !controller.signal.aborted) {
      log.warn('the parent process exited (a wrapper such as npx got the signal): stopping as on SIGTERM', { parent });
      onSignal('SIGTERM');
    }
  }, 500);
  watchdog.unref();
  return {
    signal: controller.signal,
    get exitCode() {
      return exitCode;
    },
    dispose() {
      clearTimeout(timer);
      clearInterval(watchdog);
      if (current === controller.signal) current = new AbortController().signal;
      process.off('SIGTERM', onSignal);
      process.off('SIGINT', onSignal);
    },
  };
}
