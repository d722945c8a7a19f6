-- The state braze-bridge keeps in the user's database. {{schema}} is the state schema
-- (--state-schema, default braze_bridge), quoted by the migrator.

-- One row per audience file seen: its settings as last loaded.
CREATE TABLE {{schema}}.audiences (
  name        text PRIMARY KEY,
  file        text NOT NULL,
  identifier  text NOT NULL,
  settings    jsonb NOT NULL DEFAULT '{}',
  schedule    text,
  updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Per audience and member: the attribute values Braze last confirmed (accepted), as the JSON
-- that was sent. Attributes that are NULL are absent. A member is keyed by its identifier kind
-- and value, so changing an audience's @identifier exits the old keys and enters the new ones.
-- row_hash is a 64-bit hash of the result row those values came from: rows whose hash is unchanged
-- are skipped without building their JSON, which keeps planning close to the query's own cost.
CREATE TABLE {{schema}}.snapshots (
  audience      text NOT NULL,
  identifier    text NOT NULL,
  member_key    text NOT NULL,
  attrs         jsonb NOT NULL,
  row_hash      bigint,
  confirmed_at  timestamptz NOT NULL DEFAULT now(),
  confirmed_run bigint,
  -- row_hash in the index lets the comparison read the index alone, not the wide rows.
  PRIMARY KEY (audience, identifier, member_key) INCLUDE (row_hash)
);

-- Every run of every job, with its arguments (never secrets), counts and outcome.
CREATE TABLE {{schema}}.runs (
  id           bigserial PRIMARY KEY,
  job          text NOT NULL,
  audience     text,
  status       text NOT NULL CHECK (status IN ('running', 'succeeded', 'partial', 'failed', 'aborted', 'interrupted', 'abandoned')),
  args         jsonb NOT NULL DEFAULT '{}',
  counts       jsonb NOT NULL DEFAULT '{}',
  error        text,
  started_at   timestamptz NOT NULL DEFAULT now(),
  finished_at  timestamptz
);
CREATE INDEX runs_audience_started_idx ON {{schema}}.runs (audience, started_at DESC);

-- Members that failed in a run and why (validation, per-item error from Braze, failed batch).
CREATE TABLE {{schema}}.member_failures (
  run_id      bigint NOT NULL REFERENCES {{schema}}.runs (id) ON DELETE CASCADE,
  audience    text NOT NULL,
  member_key  text,
  reason      text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX member_failures_run_idx ON {{schema}}.member_failures (run_id);
