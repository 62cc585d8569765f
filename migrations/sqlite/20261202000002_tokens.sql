-- API tokens (see migrations/postgres, 5): a SHA-256 hash of each token, never the token.
CREATE TABLE api_tokens (
    name          TEXT PRIMARY KEY,
    scope         TEXT NOT NULL CHECK (scope IN ('submit', 'read', 'admin')),
    hash          BLOB NOT NULL UNIQUE CHECK (length(hash) = 32),
    created_at    TEXT NOT NULL,
    last_used_at  TEXT
);

-- Processes poll `changes` (summed over topics) to reload; the last-used times they write
-- do not count as a change.
INSERT INTO changes (topic, version) VALUES ('tokens', 0);

CREATE TRIGGER api_tokens_inserted AFTER INSERT ON api_tokens BEGIN
    UPDATE changes SET version = version + 1 WHERE topic = 'tokens';
END;
CREATE TRIGGER api_tokens_deleted AFTER DELETE ON api_tokens BEGIN
    UPDATE changes SET version = version + 1 WHERE topic = 'tokens';
END;
