-- A submission's revision: 1 when stored, one more on every edit (PUT); what the
-- postsub layer sends as `revision`, so an older edit never overwrites a newer one.
ALTER TABLE submissions ADD COLUMN revision INTEGER NOT NULL DEFAULT 1;
