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

-- Per audience: the attributes it writes (its columns and its @on_exit keys), for the one-owner
-- rule and the guardrail's likely cause; and when an unfinished backfill started, so that an
-- interrupted backfill resumes with the members not yet confirmed since.
ALTER TABLE {{schema}}.audiences ADD COLUMN attributes text[] NOT NULL DEFAULT '{}';
ALTER TABLE {{schema}}.audiences ADD COLUMN backfill_started_at timestamptz;

-- The comparison reads each member's key, hash and unverified flag from the index alone, as it
-- read key and hash before: the primary key's index now carries both.
CREATE UNIQUE INDEX snapshots_key_idx ON {{schema}}.snapshots (audience, identifier, member_key) INCLUDE (row_hash, unverified);
ALTER TABLE {{schema}}.snapshots DROP CONSTRAINT snapshots_pkey, ADD CONSTRAINT snapshots_pkey PRIMARY KEY USING INDEX snapshots_key_idx;
