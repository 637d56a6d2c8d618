-- Accounts, tokens, uploads, files and missing symbols.

CREATE TABLE users (
    id           bigserial PRIMARY KEY,
    email        text NOT NULL,
    is_active    boolean NOT NULL DEFAULT true,
    is_superuser boolean NOT NULL DEFAULT false,
    is_staff     boolean NOT NULL DEFAULT false,
    date_joined  timestamptz NOT NULL DEFAULT now(),
    last_login   timestamptz
);
-- E-mail addresses identify users case-insensitively.
CREATE UNIQUE INDEX users_email_lower ON users (lower(email));

CREATE TABLE permissions (
    id       serial PRIMARY KEY,
    codename text NOT NULL UNIQUE,   -- as used in APIs: 'upload.upload_symbols'
    name     text NOT NULL
);

CREATE TABLE groups (
    id   serial PRIMARY KEY,
    name text NOT NULL UNIQUE
);

CREATE TABLE group_permissions (
    group_id      integer NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    permission_id integer NOT NULL REFERENCES permissions (id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, permission_id)
);

CREATE TABLE user_groups (
    user_id  bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    group_id integer NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, group_id)
);

CREATE TABLE user_permissions (
    user_id       bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    permission_id integer NOT NULL REFERENCES permissions (id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, permission_id)
);

-- Token secrets are never stored: only their SHA-256 and a short prefix to recognise them by.
CREATE TABLE tokens (
    id                           bigserial PRIMARY KEY,
    user_id                      bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    key_hash                     text NOT NULL UNIQUE,
    key_prefix                   text NOT NULL,
    expires_at                   timestamptz NOT NULL,
    notes                        text NOT NULL DEFAULT '',
    created_at                   timestamptz NOT NULL DEFAULT now(),
    last_used_at                 timestamptz,
    preferred_upload_api_version integer NOT NULL DEFAULT 1
);
CREATE INDEX tokens_user_id ON tokens (user_id);

CREATE TABLE token_permissions (
    token_id      bigint NOT NULL REFERENCES tokens (id) ON DELETE CASCADE,
    permission_id integer NOT NULL REFERENCES permissions (id) ON DELETE CASCADE,
    PRIMARY KEY (token_id, permission_id)
);

CREATE TABLE uploads (
    id                  bigserial PRIMARY KEY,
    user_id             bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    filename            text NOT NULL DEFAULT '',
    bucket_name         text NOT NULL,
    bucket_region       text,
    bucket_endpoint_url text,
    skipped_keys        text[],
    ignored_keys        text[],
    completed_at        timestamptz,
    size                bigint NOT NULL DEFAULT 0 CHECK (size >= 0),
    content_hash        text,
    download_url        text,
    redirect_urls       text[],
    try_symbols         boolean NOT NULL DEFAULT false,
    created_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX uploads_created_at ON uploads (created_at);
CREATE INDEX uploads_user_id ON uploads (user_id);

CREATE TABLE file_uploads (
    id                 bigserial PRIMARY KEY,
    upload_id          bigint REFERENCES uploads (id) ON DELETE SET NULL,
    bucket_name        text NOT NULL,
    key                text NOT NULL,
    update             boolean NOT NULL DEFAULT false,
    compressed         boolean NOT NULL DEFAULT false,
    size               bigint NOT NULL DEFAULT 0 CHECK (size >= 0),
    completed_at       timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    microsoft_download boolean NOT NULL DEFAULT false,
    debug_filename     text,
    debug_id           text,
    code_file          text,
    code_id            text,
    generator          text
);
CREATE INDEX file_uploads_created_at ON file_uploads (created_at);
CREATE INDEX file_uploads_upload_id ON file_uploads (upload_id);
CREATE INDEX file_uploads_key ON file_uploads (key);
CREATE INDEX file_uploads_debug ON file_uploads (debug_filename, debug_id)
    WHERE debug_filename IS NOT NULL AND debug_id IS NOT NULL;
CREATE INDEX file_uploads_code ON file_uploads (code_file, code_id)
    WHERE code_file IS NOT NULL AND code_id IS NOT NULL;

CREATE TABLE missing_symbols (
    id          bigserial PRIMARY KEY,
    hash        text NOT NULL UNIQUE,
    symbol      text NOT NULL,
    debugid     text NOT NULL,
    filename    text NOT NULL,
    code_file   text,
    code_id     text,
    count       integer NOT NULL DEFAULT 1,
    created_at  timestamptz NOT NULL DEFAULT now(),
    modified_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX missing_symbols_modified_at ON missing_symbols (modified_at);

INSERT INTO permissions (codename, name) VALUES
    ('upload.upload_symbols', 'Upload Symbols Files'),
    ('upload.upload_try_symbols', 'Upload Try Symbols Files'),
    ('upload.view_all_uploads', 'View All Symbols Uploads'),
    ('tokens.manage_tokens', 'Manage Your API Tokens');

-- Granting upload rights means "put the user in Uploaders"; manage_tokens is there too so that
-- uploaders can create their own tokens (docs/accounts.md).
INSERT INTO groups (name) VALUES ('Uploaders'), ('Upload Auditors');
INSERT INTO group_permissions (group_id, permission_id)
    SELECT g.id, p.id FROM groups g, permissions p
    WHERE (g.name = 'Uploaders' AND p.codename IN
              ('upload.upload_symbols', 'upload.upload_try_symbols', 'tokens.manage_tokens'))
       OR (g.name = 'Upload Auditors' AND p.codename = 'upload.view_all_uploads');
