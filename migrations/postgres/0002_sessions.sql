-- Web UI sessions (DESIGN §9), version 2: a login creates a row; the browser holds the token.

CREATE TABLE session (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- A SHA-256 (hex) of the session token; the token itself lives only in the cookie.
    token_hash  TEXT NOT NULL UNIQUE,
    user_id     BIGINT NOT NULL REFERENCES "user" (id) ON DELETE CASCADE,
    -- Every form of this session carries it; a POST without it is refused.
    csrf_token  TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL,
    CHECK (created_at <= expires_at)
);

CREATE INDEX session_user_id_idx ON session (user_id);
CREATE INDEX session_expires_at_idx ON session (expires_at);
