-- The snapshot becomes a mirror of what Braze holds for each member and attribute an audience
-- owns, over the member's whole life.
--
-- present = false: the member left the audience, but Braze still holds what this audience
-- wrote (its @on_exit was keep or a JSON object, or only standard fields remain after an
-- unset). Its row_hash is NULL, so a member who comes back is always compared with what Braze
-- holds: attributes now NULL are unset, unchanged ones are not sent again.
ALTER TABLE {{schema}}.snapshots ADD COLUMN present boolean NOT NULL DEFAULT true;

-- unverified = true: delivered under @update_existing_only true, and Braze answers 201 whether
-- or not it ignored the object for an unknown user. Until the profile is known to exist, the
-- member's full set is sent again each run.
ALTER TABLE {{schema}}.snapshots ADD COLUMN unverified boolean NOT NULL DEFAULT false;

-- When a backfill last confirmed the member's full set: an interrupted backfill resumes with
-- the members not backfilled since it began (a sync in between does not count).
ALTER TABLE {{schema}}.snapshots ADD COLUMN backfilled_at timestamptz;

-- Until now @update_existing_only defaulted to true, so members delivered by earlier versions
-- may have been ignored by Braze without a word: they are not known to exist either.
UPDATE {{schema}}.snapshots s SET unverified = true
  FROM {{schema}}.audiences a
 WHERE a.name = s.audience AND coalesce((a.settings ->> 'updateExistingOnly')::boolean, true);

-- Per audience: the attributes it writes (its columns and its @on_exit keys), for the one-owner
-- rule and the guardrail's likely cause, taken for existing audiences from what the snapshot
-- holds; and when an unfinished backfill started.
ALTER TABLE {{schema}}.audiences ADD COLUMN attributes text[] NOT NULL DEFAULT '{}';
ALTER TABLE {{schema}}.audiences ADD COLUMN backfill_started_at timestamptz;
UPDATE {{schema}}.audiences a SET attributes = ARRAY(
  SELECT k FROM (
    SELECT DISTINCT jsonb_object_keys(s.attrs) AS k FROM {{schema}}.snapshots s WHERE s.audience = a.name
    UNION
    SELECT jsonb_object_keys(CASE WHEN jsonb_typeof(a.settings #> '{onExit,values}') = 'object' THEN a.settings #> '{onExit,values}' ELSE '{}' END)
  ) AS keys ORDER BY k);

-- The comparison reads each member's key, hash, presence and verification from the index
-- alone, as it read key and hash before: the primary key's index now carries them.
CREATE UNIQUE INDEX snapshots_key_idx ON {{schema}}.snapshots (audience, identifier, member_key) INCLUDE (row_hash, present, unverified);
ALTER TABLE {{schema}}.snapshots DROP CONSTRAINT snapshots_pkey, ADD CONSTRAINT snapshots_pkey PRIMARY KEY USING INDEX snapshots_key_idx;
