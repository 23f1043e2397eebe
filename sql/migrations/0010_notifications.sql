-- Failure and recovery notifications per job: what a job asks for (notify, NULL when nothing), its
-- count of failed slots in a row, and an outbox of the events to POST.
--
-- Expand only: new columns the previous release never names and a new table, so it keeps running
-- beside this one (its writes leave notify NULL, which means "none").

-- What the job asks for, as JSON (`{"url", "after", "on_recovery", "pause_after"}`, the domain's
-- Notify); NULL: nothing. Read by the statement that ends runs only when a slot fails or a failing
-- job succeeds.
ALTER TABLE jobs ADD COLUMN notify jsonb CHECK (notify IS NULL OR jsonb_typeof(notify) = 'object');
-- Slots in a row whose final attempt did not succeed (retries of a slot are not counted apart, as
-- they are in consecutive_failures); a success sets it back to 0. NOT NULL with a constant default
-- is still expand only: PostgreSQL stores the default without rewriting the table, and the
-- previous release's statements never name the column.
ALTER TABLE jobs ADD COLUMN failed_slots integer NOT NULL DEFAULT 0 CHECK (failed_slots >= 0);

CREATE TYPE notification_event AS ENUM ('job.failing', 'job.recovered');
-- pending: waiting for its (next) delivery attempt; delivered: a receiver answered 2xx;
-- expired: not delivered within the age limit, or to a URL no attempt can reach (given up).
CREATE TYPE notification_status AS ENUM ('pending', 'delivered', 'expired');

-- The outbox. A row is written by the statement that ends the run crossing the threshold (or ending
-- the streak), in the same transaction, so an event exists exactly when its cause was committed;
-- the runners' notifier delivers it later, away from the claim path.
CREATE TABLE notifications (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- Delivery order within a job: a recovery never overtakes the failure it follows.
    seq bigint GENERATED ALWAYS AS IDENTITY,
    job_id uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    namespace text NOT NULL,
    event notification_event NOT NULL,
    -- The run whose end caused the event (its final failed attempt, or the success).
    run_id uuid NOT NULL,
    run_scheduled_for timestamptz NOT NULL,
    -- Failed slots in a row: reached (job.failing), or ended by the success (job.recovered).
    failed_slots integer NOT NULL,
    -- Whether the same statement paused the job (notify.pause_after reached).
    paused boolean NOT NULL DEFAULT false,
    -- Where to, as the job said when the event happened: a later edit does not redirect it.
    url text NOT NULL,
    status notification_status NOT NULL DEFAULT 'pending',
    attempts integer NOT NULL DEFAULT 0,
    -- When the next attempt may start; a claimed row is pushed past its delivery's timeout, so a
    -- notifier that dies mid-delivery leaves it to be claimed again (at least once).
    available_at timestamptz NOT NULL DEFAULT now(),
    last_attempt_at timestamptz,
    last_http_status integer,
    last_error text,
    -- The exact body sent, kept from the first attempt so every attempt signs the same bytes.
    payload text,
    created_at timestamptz NOT NULL DEFAULT now(),
    delivered_at timestamptz
);

-- The notifier's claim walks the pending rows in due order; delivered ones leave the index.
CREATE INDEX notifications_pending_idx ON notifications (available_at) WHERE status = 'pending';
-- A job's notifications newest first (the API), and the order check of the claim.
CREATE INDEX notifications_job_idx ON notifications (job_id, seq);
-- Retention deletes by age.
CREATE INDEX notifications_created_idx ON notifications (created_at);
