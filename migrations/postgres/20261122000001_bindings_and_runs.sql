-- Bindings: which task kind runs for which form, how, with what config.
CREATE TABLE bindings (
    id          uuid PRIMARY KEY,
    form_id     uuid NOT NULL,
    name        text NOT NULL,
    kind        text NOT NULL,
    mode        text NOT NULL CHECK (mode IN ('sync', 'async')),
    config      jsonb NOT NULL,
    enabled     boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (form_id, name)
);

CREATE INDEX bindings_form_id ON bindings (form_id, created_at);

-- Every proxy and worker keeps bindings in memory; this tells them when to reload.
CREATE FUNCTION postsub_bindings_changed() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('postsub_bindings', COALESCE(NEW.id, OLD.id)::text);
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER bindings_changed
    AFTER INSERT OR UPDATE OR DELETE ON bindings
    FOR EACH ROW EXECUTE FUNCTION postsub_bindings_changed();

-- Run history: one row per (submission, binding), sync and async alike.
-- binding_id has no foreign key on purpose: the history outlives a deleted binding.
CREATE TABLE task_runs (
    run_id         uuid PRIMARY KEY,
    binding_id     uuid NOT NULL,
    form_id        uuid NOT NULL,
    submission_id  uuid NOT NULL,
    kind           text NOT NULL,
    mode           text NOT NULL CHECK (mode IN ('sync', 'async')),
    status         text NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
    attempts       integer NOT NULL DEFAULT 0,
    output         jsonb,
    flags          jsonb NOT NULL DEFAULT '[]',
    error          text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    started_at     timestamptz,
    finished_at    timestamptz,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX task_runs_created ON task_runs (created_at DESC, run_id DESC);
CREATE INDEX task_runs_form ON task_runs (form_id, created_at DESC);
CREATE INDEX task_runs_submission ON task_runs (submission_id);
CREATE INDEX task_runs_binding ON task_runs (binding_id, created_at DESC);
CREATE INDEX task_runs_status ON task_runs (status, created_at DESC);
