-- verify: reading Braze back.
--
-- verified_at: when `verify` last compared the member's profile with the snapshot. A full
-- check (--all) interrupted part-way resumes with the members not verified since it started.
ALTER TABLE {{schema}}.snapshots ADD COLUMN verified_at timestamptz;

-- When an unfinished full check of the audience started (NULL: none is under way).
ALTER TABLE {{schema}}.audiences ADD COLUMN verify_started_at timestamptz;
