-- `complete_step` returns one row per call. Told nothing, the planner assumes 1 000, so a
-- batch of ten completions (api/src/store/postgres/steps.rs) looked like 10 000 rows, enough
-- to pass `jit_above_cost` and to choose plans made for that many rows.
ALTER FUNCTION complete_step(uuid, uuid, uuid, text, text[], text[]) ROWS 1;
