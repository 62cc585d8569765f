-- Every change made through the admin API or `postsub tokens`: who, what, on what, and the
-- target before and after (secrets masked). Newest first by id.
CREATE TABLE audit_log (
    id BIGSERIAL PRIMARY KEY,
    at TIMESTAMPTZ NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    before JSONB,
    after JSONB
);
CREATE INDEX audit_log_at ON audit_log (at);
