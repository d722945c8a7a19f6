-- Currents ingestion: one manifest row per object version (key + ETag) seen under a source.
-- A file's rows and its row's move to 'loaded' commit in one transaction, and workers claim
-- files with FOR UPDATE SKIP LOCKED, so each file is loaded exactly once however many
-- processes run.
CREATE TABLE {{schema}}.currents_files (
  source        text NOT NULL,
  key           text NOT NULL,
  etag          text NOT NULL,
  size          bigint,
  event_type    text NOT NULL,
  hour          timestamptz NOT NULL,
  status        text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'loaded', 'failed')),
  target_table  text,
  records       bigint,
  rows_loaded   bigint,
  duplicates    bigint,
  error         text,
  record_index  bigint,
  attempts      int NOT NULL DEFAULT 0,
  discovered_at timestamptz NOT NULL DEFAULT now(),
  loaded_at     timestamptz,
  run_id        bigint,
  PRIMARY KEY (source, key, etag)
);
CREATE INDEX currents_files_open_idx ON {{schema}}.currents_files (source, hour) WHERE status <> 'loaded';
CREATE INDEX currents_files_type_idx ON {{schema}}.currents_files (event_type, hour);
