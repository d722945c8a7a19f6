-- The event ids an ingest process wrote lately to each event table, as its Bloom filters
-- (recent-ids.ts), kept from one run to the next.
--
-- A file's repeats (Currents delivers at least once) are mostly of the files just before it.
-- When each run loads the newest hour, those were loaded by the run before, whose ids the new
-- process did not know: the first batch holding one failed on the key, was rolled back, and
-- every later batch of the file was looked up in full. A run now starts from the filters the
-- last run of the table left. They only decide which ids are looked up: a stale or missing
-- row costs lookups, never a wrong row.
CREATE TABLE {{schema}}.currents_recent_ids (
  target_schema text NOT NULL,
  table_name text NOT NULL,
  -- Oldest first; counts[i] ids were noted in filters[i].
  filters bytea[] NOT NULL,
  counts integer[] NOT NULL,
  saved_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (target_schema, table_name)
);
