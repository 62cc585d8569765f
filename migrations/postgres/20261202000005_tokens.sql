-- API tokens: who may call the proxy, and for what (scope). Only a SHA-256 hash of each
-- token is kept; the token itself is shown once, when it is made.
CREATE TABLE api_tokens (
    name          text PRIMARY KEY,
    scope         text NOT NULL CHECK (scope IN ('submit', 'read', 'admin')),
    hash          bytea NOT NULL UNIQUE CHECK (length(hash) = 32),
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz
);

-- Every proxy keeps the tokens in memory and reloads them on this notification, so a
-- revoke takes effect everywhere at once. Only a change of the set of tokens notifies,
-- not the last-used times the proxies write.
CREATE FUNCTION postsub_tokens_changed() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('postsub_tokens', '');
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER api_tokens_changed
    AFTER INSERT OR DELETE ON api_tokens
    FOR EACH STATEMENT EXECUTE FUNCTION postsub_tokens_changed();
