-- Several schedule entries per job, and exclusions. Expand only: two columns with defaults, so the
-- previous release's runners and API keep working against this schema.
--
-- `schedules` is empty for a job with one entry (its expression, zone and bounds stay in the
-- schedule, timezone, start_at and end_at columns, as before). A job with several lists them all
-- here — each with its id, expression, zone, anchor, bounds and paused flag — and the four columns
-- repeat the first, for readers that know only one. `exclusions` holds the dates and calendars on
-- which the job does not fire, or NULL.
ALTER TABLE jobs ADD COLUMN schedules jsonb NOT NULL DEFAULT '[]'::jsonb
    CHECK (jsonb_typeof(schedules) = 'array' AND jsonb_array_length(schedules) <= 20);
ALTER TABLE jobs ADD COLUMN exclusions jsonb
    CHECK (exclusions IS NULL OR jsonb_typeof(exclusions) = 'object');
