-- Runs pruned from the history (--keep-days), counted per job, audience and outcome, so that
-- braze_bridge_runs_total is a true counter: live runs plus these never decrease.
CREATE TABLE {{schema}}.run_totals (
  job       text NOT NULL,
  audience  text NOT NULL DEFAULT '',
  status    text NOT NULL,
  n         bigint NOT NULL,
  PRIMARY KEY (job, audience, status)
);
