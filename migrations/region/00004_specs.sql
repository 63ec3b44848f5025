-- +goose Up
-- The flavor's extra specs as the server got them (boot or resize), so a
-- later change to the flavor does not change running servers.
ALTER TABLE servers ADD COLUMN extra_specs jsonb NOT NULL DEFAULT '{}';

-- +goose Down
ALTER TABLE servers DROP COLUMN extra_specs;
