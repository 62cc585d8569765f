-- The runs that flagged answers, for the history's flag filters and `runs stats --by
-- flag_rule`: a partial index, so the runs without flags (most) cost an insert nothing more.
CREATE INDEX task_runs_flagged ON task_runs (form_id, created_at DESC) WHERE flags <> '[]';
