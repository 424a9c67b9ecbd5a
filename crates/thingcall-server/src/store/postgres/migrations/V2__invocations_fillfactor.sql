-- Room in every page for the outcome that completes a record later, so
-- the update stays on its page (a HOT update: no new index entries).
ALTER TABLE invocations SET (fillfactor = 80);
