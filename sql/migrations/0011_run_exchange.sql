-- What an HTTP attempt sent and what came back beyond its status and body: the request (method,
-- URL, headers and the first 4 KiB of the body) and the response's headers, both as JSON objects,
-- with secrets masked by the runner before they are written (docs/console.md, "What a run sent").
--
-- Expand only: two nullable columns that the previous release never names, so its runners and API
-- keep working beside this schema (their runs leave both NULL, as do log actions and rescued runs).
-- runs is partitioned by slot: a column added to the parent is added to every partition, the
-- default one included, and to those made later. A nullable column with no default and no
-- constraint changes only the catalog: no partition is rewritten or scanned, so the lock it takes
-- is held for a moment. (A CHECK here would scan every partition under that lock.)
ALTER TABLE runs ADD COLUMN request jsonb;
ALTER TABLE runs ADD COLUMN response_headers jsonb;
