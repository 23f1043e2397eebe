-- Schedules are now read with ASCII spaces and tabs between fields only, and refused when they hold
-- any other character outside printable ASCII. Stored schedules written with other whitespace (the
-- trailing newline of a YAML block, a no-break space pasted from a document) were read as if those
-- were spaces: respell them so, or the runner would stop those jobs as unreadable.
UPDATE jobs
SET schedule = btrim(
        regexp_replace(schedule, '[\s\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\u001c-\u001f]+', ' ', 'g'),
        ' ')
WHERE schedule ~ '[^\t -~]';
