-- Upload v2: the files a client was told to PUT, kept until the completion call verifies them.
ALTER TABLE uploads ADD COLUMN pending_files jsonb;
