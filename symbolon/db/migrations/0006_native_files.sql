-- Native debug files (docs/upload.md, "Native debug files"): what each stored file is, as read
-- from its content, and the keys it is also stored under beside its own (key).
ALTER TABLE file_uploads
    ADD COLUMN file_format text,
    ADD COLUMN kind text,
    ADD COLUMN arch text,
    ADD COLUMN features text[],
    ADD COLUMN aliases text[];
