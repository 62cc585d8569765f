-- The submission event a run is for (Process's `event`): runs of earlier releases were all
-- for a creation. A constant default adds the column without rewriting the table.
ALTER TABLE task_runs ADD COLUMN event text NOT NULL DEFAULT 'created'
    CHECK (event IN ('created', 'updated', 'deleted'));
-- `runs list --event updated|deleted`: a partial index, so the runs of creations (most)
-- cost an insert nothing more.
CREATE INDEX task_runs_edits ON task_runs (event, created_at DESC) WHERE event <> 'created';
