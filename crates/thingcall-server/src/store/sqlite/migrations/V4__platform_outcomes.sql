-- Outcomes of the platform are named, so they cannot be taken for a
-- device's reply code: an undelivered async call was stored as 9201 and a
-- full queue as 429, with no output (a device's reply always has one).
UPDATE invocations SET code = 'NOT_DELIVERED' WHERE code = '9201' AND output IS NULL;
UPDATE invocations SET code = 'QUEUE_FULL' WHERE code = '429' AND output IS NULL;
