-- Forms and the submissions made to them.

CREATE TABLE forms (
    id uuid PRIMARY KEY,
    title text NOT NULL,
    -- [{key, label, type, required}], validated by the backend when the form is created.
    questions jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE submissions (
    id uuid PRIMARY KEY,
    form_id uuid NOT NULL REFERENCES forms (id) ON DELETE CASCADE,
    -- Always a JSON object keyed by question key; checked against the questions by postsub.
    answers jsonb NOT NULL CHECK (jsonb_typeof(answers) = 'object'),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Listing a form's submissions, newest first.
CREATE INDEX submissions_form_id_created_at ON submissions (form_id, created_at);
