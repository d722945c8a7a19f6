-- Currents under hostile input.
--
-- Event-type → table mapping. Table names were the lower-cased type with . → _, which made
-- users.Foo and users_foo share a table and broke on types longer than 63 bytes. The mapping is
-- now allocated once per (target schema, event type) and kept here, so `currents status` can
-- show it and forwarding finds the table without recomputing a name.
CREATE TABLE {{schema}}.currents_event_tables (
  target_schema text NOT NULL,
  event_type    text NOT NULL,
  table_name    text NOT NULL CHECK (octet_length(table_name) <= 63),
  created_at    timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (target_schema, event_type),
  UNIQUE (target_schema, table_name)
);

-- Existing installs: every event type already loaded keeps the table it was loaded into. Where
-- two types shared a table, the first (by name) keeps it and the other gets a table of its own
-- from its next file on; its earlier rows stay where they were.
INSERT INTO {{schema}}.currents_event_tables (target_schema, event_type, table_name)
SELECT DISTINCT ON (split_part(target_table, '.', 1), split_part(target_table, '.', 2))
       split_part(target_table, '.', 1), event_type, split_part(target_table, '.', 2)
  FROM {{schema}}.currents_files
 WHERE target_table IS NOT NULL AND status = 'loaded'
 ORDER BY split_part(target_table, '.', 1), split_part(target_table, '.', 2), event_type
ON CONFLICT DO NOTHING;

-- NUL characters (U+0000) PostgreSQL cannot store: replaced by U+FFFD, counted per file.
ALTER TABLE {{schema}}.currents_files ADD COLUMN nul_replaced bigint;
