/** Running the built CLI as a process, as users and schedulers do. */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';

export const BIN = join(process.cwd(), 'bin', 'braze-bridge.js');

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export function startCli(args: string[], env: Record<string, string | undefined>): { child: ChildProcess; done: Promise<CliResult> } {
  const child = spawn(process.execPath, [BIN, ...args], {
    env: { PATH: process.env.PATH, HOME: process.env.HOME, LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d) => (stdout += d));
  child.stderr!.on('data', (d) => (stderr += d));
  const done = new Promise<CliResult>((resolve) => child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr })));
  return { child, done };
}

export function cli(args: string[], env: Record<string, string | undefined> = {}): Promise<CliResult> {
  return startCli(args, env).done;
}

/**
 * Poll until `condition` holds (a process test cannot know when the child gets there), failing
 * with `what` after `timeoutMs`, or at once, with the end of its stderr, if `cli` exits first.
 */
export async function waitFor(
  condition: () => boolean | Promise<boolean>,
  what: string,
  options: { cli?: { child: ChildProcess; done: Promise<CliResult> }; timeoutMs?: number; everyMs?: number } = {},
): Promise<void> {
  const { cli, timeoutMs = 30_000, everyMs = 5 } = options;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await condition()) return;
    if (cli && (cli.child.exitCode !== null || cli.child.signalCode !== null)) {
      const r = await cli.done;
      throw new Error(`the CLI exited (${r.code ?? r.signal}) before ${what}: ${r.stderr.slice(-1500)}`);
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
}
