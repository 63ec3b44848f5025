-- +goose Up
-- Nova's reservation id: one per create request, shared by every server
-- a multi-create made ("r-" and 8 characters).
ALTER TABLE servers ADD COLUMN reservation_id text NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE servers DROP COLUMN reservation_id;
