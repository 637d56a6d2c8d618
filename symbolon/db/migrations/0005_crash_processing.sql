-- Processed crashes (docs/processing.md): one row per crash the processor has seen, for lists,
-- filters and top signatures. The processed crash itself is in the crash store.
CREATE TABLE crashes (
    crash_id        text PRIMARY KEY,
    product         text NOT NULL DEFAULT '',
    version         text NOT NULL DEFAULT '',
    release_channel text NOT NULL DEFAULT '',
    -- When the collector received it (the raw crash's submitted_timestamp, else the id's day).
    date            timestamptz NOT NULL,
    signature       text,
    state           text NOT NULL CHECK (state IN ('pending', 'processed', 'failed')),
    reason          text,
    processed_at    timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX crashes_date ON crashes (date DESC, crash_id);
CREATE INDEX crashes_signature_date ON crashes (signature, date);
CREATE INDEX crashes_product_version_date ON crashes (product, version, date);
CREATE INDEX crashes_pending ON crashes (date) WHERE state = 'pending';

-- Modules a processed crash had no symbols for, so that an upload bringing one queues the crash
-- again. Debug ids are upper-cased, as uploads store them.
CREATE TABLE crash_missing_modules (
    debug_file text NOT NULL,
    debug_id   text NOT NULL,
    crash_id   text NOT NULL REFERENCES crashes (crash_id) ON DELETE CASCADE,
    date       timestamptz NOT NULL,
    PRIMARY KEY (debug_file, debug_id, crash_id)
);
CREATE INDEX crash_missing_modules_crash_id ON crash_missing_modules (crash_id);

-- Reading annotations and dumps, which can hold personal data: superusers, and the tokens they
-- give it to.
INSERT INTO permissions (codename, name) VALUES ('crashes.view_crashes', 'View Crash Reports');
