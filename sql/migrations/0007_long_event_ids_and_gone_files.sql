-- Forwarding keyed like the event tables, and pending Currents files whose object is gone.
--
-- forward_events had its primary key on event_id, and a btree entry holds about 2.7 kB: one
-- Currents event with a longer id (they reach ~9 kB) failed the INSERT that records it, which
-- aborted every forward run. event_key is the id, or 'md5:' and its MD5 when longer than 1,000
-- bytes, exactly as the event tables' id_key (migration 0006), so the pending-events anti-join
-- computes the same key from either side. Existing rows keep their ids; ids up to 1,000 bytes
-- (all but a rare few) are their own key. Adding a stored column rewrites the table once.
ALTER TABLE {{schema}}.forward_events
  ADD COLUMN event_key text GENERATED ALWAYS AS (CASE WHEN octet_length(event_id) > 1000 THEN 'md5:' || md5(event_id) ELSE event_id END) STORED;
ALTER TABLE {{schema}}.forward_events DROP CONSTRAINT forward_events_pkey;
ALTER TABLE {{schema}}.forward_events ADD PRIMARY KEY (destination, event_table, event_key);

-- When a run's listing last saw a file that is not loaded yet (pending or failed). A pending
-- row that a complete listing started after this no longer contains is gone from the bucket
-- (deleted, or expired by a lifecycle rule) and is marked failed, so nobody waits for it.
-- A time rather than a run id: two runs listing at once must not mark each other's files.
ALTER TABLE {{schema}}.currents_files ADD COLUMN listed_at timestamptz;
