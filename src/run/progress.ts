/** A one-line progress bar on stderr, for people at a terminal (never in logs or pipes). */

export interface Progress {
  /** Redraw: `done` of `total` units, with a rate since the bar was made. */
  update(p: { label?: string; done: number; total: number; extra?: string }): void;
}

export function progressBar(unit: string, stream: NodeJS.WriteStream = process.stderr, clock: () => number = Date.now): Progress {
  const started = clock();
  const width = 30;
  return {
    update({ label, done, total, extra }) {
      const filled = total ? Math.min(width, Math.round((done / total) * width)) : width;
      const rate = Math.round(done / Math.max(0.001, (clock() - started) / 1000));
      stream.write(`\r${label ? `${label} ` : ''}[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${done}/${total} ${unit}${extra ? `, ${extra}` : ''}, ${rate}/s`);
      if (done >= total) stream.write('\n');
    },
  };
}
