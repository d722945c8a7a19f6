/**
 * Within one process, one file at a time writes to each event table: from its first write
 * until its transaction has ended. The others wait for their turn in Node, having decoded
 * their first rows meanwhile.
 *
 * Why: a file COPYs its rows straight into the event table. Currents delivers at least once,
 * and a repeat usually lands in a nearby file, which another worker is loading at the same
 * time. Were both writing, the COPY's key check would wait for the other file's transaction,
 * then fail (and two files each holding a row the other repeats would deadlock): the files
 * would load one after the other anyway, and the second twice. Taking turns, a file's lookup
 * sees every row written before it as committed, so its COPY never waits. What this gives up
 * is two COPYs into one table at once from one process; files of other types, and Node's
 * decoding of the next files, still run alongside. Other processes are not covered: their
 * repeats are caught by the database (write-events.ts).
 *
 * The turn comes with the ids lately written to the table by this process (recent-ids.ts),
 * which only the file holding the turn reads and adds to. Since workers no longer claim an
 * event type another worker is loading (load-pending.ts), a turn is normally free when taken;
 * it stays as the guarantee, and as the keeper of the ids as a table passes between workers.
 */
import { RecentIds } from './recent-ids.js';

/** A file's turns, taken as it first writes to a table and given back after its COMMIT or ROLLBACK. */
export interface Turn {
  /**
   * Wait until no other file of this process writes to `table` (at once if this file holds it);
   * then the ids lately written there are this file's to read and add to.
   */
  take(table: string): Promise<RecentIds>;
  /** The file's transaction has ended: the next file may write. */
  release(): void;
}

/** The turns of the files one ingest loads; shared by its workers. */
export class TableTurns {
  /** Per table, settled when the last file to queue for it has released it. */
  private readonly queues = new Map<string, Promise<void>>();
  private readonly written = new Map<string, RecentIds>();

  hold(): Turn {
    const held = new Map<string, () => void>();
    return {
      take: async (table) => {
        const ids = this.written.get(table) ?? new RecentIds();
        this.written.set(table, ids);
        if (held.has(table)) return ids;
        const before = this.queues.get(table) ?? Promise.resolve();
        let release!: () => void;
        const mine = new Promise<void>((resolve) => (release = resolve));
        const queue = before.then(() => mine);
        this.queues.set(table, queue);
        held.set(table, () => {
          release();
          // The last in line leaves no queue behind.
          if (this.queues.get(table) === queue) this.queues.delete(table);
        });
        await before;
        return ids;
      },
      release: () => {
        for (const give of held.values()) give();
        held.clear();
      },
    };
  }
}
