-- The snapshot's attributes as json (text) rather than jsonb.
--
-- A member's attributes are built as JSON text and sent as text; storing them as jsonb meant
-- building jsonb for every member a sync records (twice the cost of the text) and writing it
-- back out as text to send it. They are compared as jsonb only where a member is a candidate
-- (its row hash changed), by casting. Existing rows keep their values: jsonb's text is valid
-- JSON with the same meaning. This rewrites the table once.
ALTER TABLE {{schema}}.snapshots ALTER COLUMN attrs TYPE json USING attrs::json;
