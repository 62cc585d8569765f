-- Durable state tasks keep per binding (say, the spreadsheet a google_sheets binding made).
CREATE TABLE task_state (
    binding_id  uuid NOT NULL,
    key         text NOT NULL,
    value       jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (binding_id, key)
);
