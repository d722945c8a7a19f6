/**
 * `--metrics-file`: Prometheus text format for node_exporter's textfile collector, written
 * atomically (a temporary file renamed over the old one) at the end of each run. Built from
 * the run history, so one file describes every job and audience, not only the last run.
 */
import { renameSync, writeFileSync } from 'node:fs';
import type { Queryable } from '../db/pool.js';
import { runMetrics } from './run-store.js';
import { currentsMetrics } from '../currents/manifest.js';
import { forwardMetrics } from '../forward/forward-store.js';

interface Metric {
  name: string;
  help: string;
  type: 'gauge' | 'counter';
  samples: Array<{ labels: Record<string, string>; value: number }>;
}

export async function renderMetrics(db: Queryable, schema: string, now = Date.now()): Promise<string> {
  const metrics: Metric[] = [];
  const add = (name: string, help: string, type: Metric['type'], samples: Metric['samples']) => metrics.push({ name, help, type, samples });

  const runs = await runMetrics(db, schema);
  add('braze_bridge_runs_total', 'Runs by job, audience and outcome (pruned runs included).', 'counter',
    runs.byOutcome.map((r) => ({ labels: { job: r.job, audience: r.audience ?? '', outcome: r.status }, value: Number(r.n) })));
  add('braze_bridge_last_success_timestamp_seconds', 'When the last run that finished (succeeded or partial) ended.', 'gauge',
    runs.lastSuccess.map((r) => ({ labels: { job: r.job, audience: r.audience ?? '' }, value: r.t.getTime() / 1000 })));
  add('braze_bridge_last_run_duration_seconds', 'Duration of the last run.', 'gauge',
    runs.last.map((r) => ({ labels: { job: r.job, audience: r.audience ?? '' }, value: (r.finished_at.getTime() - r.started_at.getTime()) / 1000 })));
  const num = (v: unknown) => (typeof v === 'number' ? v : 0);
  const audienceRuns = runs.last.filter((r) => r.job === 'sync' || r.job === 'backfill');
  add('braze_bridge_last_run_members', 'Members of the last run by kind.', 'gauge',
    audienceRuns.flatMap((r) => ['new', 'changed', 'exited', 'unchanged', 'failed', 'unverified'].map((kind) => ({ labels: { job: r.job, audience: r.audience ?? '', kind }, value: num(r.counts[kind]) }))));
  for (const [field, name, help] of [
    ['updates', 'braze_bridge_last_run_updates_sent', 'Attribute updates (data points) Braze accepted in the last run.'],
    ['requests', 'braze_bridge_last_run_requests', 'Requests sent to Braze in the last run.'],
    ['retries', 'braze_bridge_last_run_retries', 'Retried requests in the last run.'],
    ['rateLimited', 'braze_bridge_last_run_rate_limited', 'Requests answered 429 in the last run.'],
  ] as const) {
    add(name, help, 'gauge', audienceRuns.map((r) => ({ labels: { job: r.job, audience: r.audience ?? '' }, value: num(r.counts[field]) })));
  }

  // verify: what the last check of each audience found in Braze.
  const verifyRuns = runs.last.filter((r) => r.job === 'verify' && r.audience);
  add('braze_bridge_verify_checked_members', 'Members the last verify compared with Braze, per audience.', 'gauge',
    verifyRuns.map((r) => ({ labels: { audience: r.audience! }, value: num(r.counts.checked) })));
  add('braze_bridge_verify_drifted_members', 'Members whose profile in Braze differed from the snapshot at the last verify.', 'gauge',
    verifyRuns.map((r) => ({ labels: { audience: r.audience! }, value: num(r.counts.drifted) })));
  add('braze_bridge_verify_missing_profiles', 'Members the last verify did not find in Braze at all.', 'gauge',
    verifyRuns.map((r) => ({ labels: { audience: r.audience! }, value: num(r.counts.missingProfiles) })));
  add('braze_bridge_verify_drifted_values', 'Drifted values at the last verify, per audience, attribute and kind (changed, missing, unexpected).', 'gauge',
    verifyRuns.flatMap((r) =>
      Object.entries((r.counts.perAttribute ?? {}) as Record<string, Record<string, number>>).flatMap(([attribute, kinds]) =>
        Object.entries(kinds).map(([kind, n]) => ({ labels: { audience: r.audience!, attribute, kind }, value: num(n) })),
      ),
    ));

  const currents = await currentsMetrics(db, schema);
  add('braze_bridge_currents_files', 'Currents files by event type and status.', 'gauge',
    currents.byTypeAndStatus.map((r) => ({ labels: { event_type: r.eventType, status: r.status }, value: r.files })));
  add('braze_bridge_currents_rows_total', 'Currents events loaded, by event type.', 'counter',
    currents.byTypeAndStatus.filter((r) => r.status === 'loaded').map((r) => ({ labels: { event_type: r.eventType }, value: r.rows })));
  add('braze_bridge_currents_lag_seconds', 'Seconds since the end of the newest date= hour loaded, by event type.', 'gauge',
    currents.newestLoaded.map((r) => ({ labels: { event_type: r.eventType }, value: Math.max(0, (now - r.newest.getTime() - 3_600_000) / 1000) })));

  const forwarded = await forwardMetrics(db, schema);
  add('braze_bridge_forward_events', 'Events handled per forwarding destination: sent (accepted) or rejected for good.', 'gauge',
    forwarded.map((r) => ({ labels: { destination: r.destination, status: r.status }, value: r.events })));

  const lines: string[] = [];
  for (const m of metrics) {
    lines.push(`# HELP ${m.name} ${m.help}`, `# TYPE ${m.name} ${m.type}`);
    for (const sample of m.samples) {
      const labels = Object.entries(sample.labels).map(([k, v]) => `${k}="${v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`).join(',');
      lines.push(`${m.name}${labels ? `{${labels}}` : ''} ${Number.isFinite(sample.value) ? sample.value : 0}`);
    }
  }
  return `${lines.join('\n')}\n`;
}

/** Write atomically: a scraper never reads half a file. */
export async function writeMetricsFile(db: Queryable, schema: string, file: string): Promise<void> {
  const text = await renderMetrics(db, schema);
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, text);
  renameSync(tmp, file);
}
