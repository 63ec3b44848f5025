-- +goose Up
-- A VXLAN network identifier per network, the same on every host, and
-- each host's tunnel endpoint (hosts reach each other's sets through it).
ALTER TABLE networks ADD COLUMN vni serial UNIQUE;
ALTER TABLE hosts ADD COLUMN tunnel_ip text NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE hosts DROP COLUMN tunnel_ip;
ALTER TABLE networks DROP COLUMN vni;
