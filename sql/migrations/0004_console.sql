-- The web console: the secret its session cookies and CSRF tokens are signed with, and the note a
-- person leaves when pausing a job.

-- One row: made at random by the first API process that needs it, so every API process and replica
-- on this database signs and checks sessions alike with nothing to configure.
CREATE TABLE console_secret (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    secret bytea NOT NULL CHECK (length(secret) >= 32),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Why a job is paused ("deploy freeze until Monday"); cleared when it resumes from the console.
ALTER TABLE jobs ADD COLUMN pause_note text;
