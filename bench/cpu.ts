/**
 * CPU seconds, as the kernel counts them, for the bench: of the processes this one spawned and
 * waited for (a CLI run), and of a PostgreSQL server on this machine (the postmaster and every
 * backend, those that ended included: a backend's time moves into the postmaster's count of
 * its waited-for children when it exits).
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Queryable } from '../src/db/pool.js';

const TICKS = 100; // USER_HZ: /proc counts in hundredths of a second on Linux.

/** utime, stime, cutime, cstime of one process, in seconds (0 when it is gone). */
function times(pid: number | 'self'): { own: number; children: number } {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may hold spaces): state is field 3, utime field 14.
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { own: (Number(f[11]) + Number(f[12])) / TICKS, children: (Number(f[13]) + Number(f[14])) / TICKS };
  } catch {
    return { own: 0, children: 0 };
  }
}

/** CPU seconds of the child processes this process has waited for so far. */
export function childrenCpu(): number {
  return times('self').children;
}

function childPids(parent: number): number[] {
  const pids: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(join('/proc', name, 'stat'), 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === parent) pids.push(Number(name));
    } catch {
      /* gone */
    }
  }
  return pids;
}

/**
 * A meter of a local PostgreSQL server's CPU, found through its data directory's postmaster.pid
 * (needs a superuser to read data_directory, and the server on this machine). Undefined when the
 * server is elsewhere.
 */
export async function serverCpuMeter(db: Queryable): Promise<(() => number) | undefined> {
  try {
    const { rows } = await db.query<{ d: string }>('SELECT current_setting($1) AS d', ['data_directory']);
    const pid = Number(readFileSync(join(rows[0]!.d, 'postmaster.pid'), 'utf8').split('\n')[0]);
    if (!Number.isFinite(pid) || times(pid).own === 0) return undefined;
    return () => {
      const p = times(pid);
      return p.own + p.children + childPids(pid).reduce((sum, c) => sum + times(c).own + times(c).children, 0);
    };
  } catch {
    return undefined;
  }
}

/**
 * The share of this machine's CPU time the host took for other guests (steal, from /proc/stat)
 * since the meter was made: on a shared VM, the figures of a run with much steal read high.
 * Undefined where /proc/stat is missing.
 */
export function stealMeter(): (() => number) | undefined {
  const read = () => {
    // cpu user nice system idle iowait irq softirq steal …
    const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1, 9).map(Number);
    return { steal: f[7]!, total: f.reduce((a, b) => a + b, 0) };
  };
  try {
    const start = read();
    return () => {
      const now = read();
      return now.total === start.total ? 0 : (now.steal - start.steal) / (now.total - start.total);
    };
  } catch {
    return undefined;
  }
}
