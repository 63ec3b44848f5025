-- +goose Up
-- The containers of a server made with the set API ([]schema.SetContainer);
-- NULL for a plain server (infra + one app from the server's image).
ALTER TABLE servers ADD COLUMN set_spec jsonb;

-- +goose Down
ALTER TABLE servers DROP COLUMN set_spec;
