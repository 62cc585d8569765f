-- Forms and the submissions made to them: the PostgreSQL tables in SQLite types.
--
-- UUIDs are 16-byte BLOBs (how sqlx binds `uuid::Uuid`), JSON is TEXT, and timestamps are
-- RFC 3339 TEXT in UTC with exactly six fractional digits, always bound by the backend
-- (never a SQL default: SQLite's own `CURRENT_TIMESTAMP` has another format), so that text
-- order is time order.

CREATE TABLE forms (
    id BLOB PRIMARY KEY NOT NULL CHECK (length(id) = 16),
    title TEXT NOT NULL,
    -- [{key, label, type, required}], validated by the backend when the form is created.
    questions TEXT NOT NULL CHECK (json_type(questions) = 'array'),
    created_at TEXT NOT NULL
) STRICT;

CREATE TABLE submissions (
    id BLOB PRIMARY KEY NOT NULL CHECK (length(id) = 16),
    form_id BLOB NOT NULL REFERENCES forms (id) ON DELETE CASCADE,
    -- Always a JSON object keyed by question key; checked against the questions by postsub.
    answers TEXT NOT NULL CHECK (json_type(answers) = 'object'),
    created_at TEXT NOT NULL
) STRICT;

-- Listing a form's submissions, newest first.
CREATE INDEX submissions_form_id_created_at ON submissions (form_id, created_at);
