-- Browser sessions (docs/accounts.md). The rows are the truth; Redis only caches them, so a
-- paused Redis never signs anyone out. The cookie carries a random key; only its SHA-256 is here.
CREATE TABLE sessions (
    key_hash   text PRIMARY KEY,
    user_id    bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    csrf_token text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
CREATE INDEX sessions_user_id ON sessions (user_id);
CREATE INDEX sessions_expires_at ON sessions (expires_at);

-- Why an account is inactive: 'blocked' (the identity provider said so; signing in again undoes
-- it, see docs/decisions.md) or 'admin' (an administrator decided; signing in does not undo it).
ALTER TABLE users ADD COLUMN inactive_reason text;

-- Every change an administrator makes to a user, by the web API or the command line.
CREATE TABLE audit_log (
    id         bigserial PRIMARY KEY,
    actor_id   bigint REFERENCES users (id) ON DELETE SET NULL,
    actor      text NOT NULL,
    user_id    bigint REFERENCES users (id) ON DELETE SET NULL,
    action     text NOT NULL,
    message    text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_user_id ON audit_log (user_id);
