-- Uploads are processed by task actors: their state is kept on the row, and a retried actor
-- must not record a file twice.
ALTER TABLE uploads ADD COLUMN staging_ref text;
ALTER TABLE uploads ADD COLUMN error text;
ALTER TABLE uploads ADD COLUMN failed_at timestamptz;
CREATE UNIQUE INDEX file_uploads_upload_key ON file_uploads (upload_id, key)
    WHERE upload_id IS NOT NULL;
-- Where the upload writes: the full location URL, as configured when it was received.
ALTER TABLE uploads ADD COLUMN destination_url text;
-- How many times processing started, and the HTTP status a failure is reported with.
ALTER TABLE uploads ADD COLUMN attempts integer NOT NULL DEFAULT 0;
ALTER TABLE uploads ADD COLUMN error_status integer;
