-- +goose Up
-- Region keeps the JSON of the servers it has rendered and reuses it while
-- nothing the body shows has changed (region/compute/rendercache.go). What
-- it checks is the server row's xmin, which PostgreSQL changes with every
-- UPDATE of the row, plus the epoch below. For that to cover everything a
-- server's body shows, a change to the rows the body reads besides the
-- server's own must rewrite the server's row in the same transaction:
--   * ports (addresses: network, IP, MAC, order) and port_security_groups
--     (security_groups) touch their server's row, below;
--   * a rename of a network (the key of "addresses") or of a security group
--     (a name in "security_groups") bumps server_render_epoch instead of
--     touching every server on it: renames are rare, and one row is cheaper
--     than thousands (a list reads the epoch once).
-- Anything else a body shows must come from the server row itself, or from
-- the request (region/compute viewOpts: microversion, role, URL, host status).
CREATE TABLE server_render_epoch (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    n   bigint  NOT NULL DEFAULT 0
);
INSERT INTO server_render_epoch DEFAULT VALUES;

-- +goose StatementBegin
-- server_render_touch gives a server's row a new version (a new xmin),
-- unless this transaction has written the row already: then its xmin is
-- this transaction's and changes anyway when it commits (which is how a
-- create, whose ports are made in the transaction that inserts the
-- server, pays no extra row version).
CREATE FUNCTION server_render_touch(server uuid) RETURNS void LANGUAGE sql AS $$
    UPDATE servers SET updated_at = updated_at
    WHERE id = server AND xmin <> pg_current_xact_id()::xid
$$;
-- +goose StatementEnd

-- +goose StatementBegin
-- (OLD is NULL on INSERT and NEW on DELETE.)
CREATE FUNCTION ports_render_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM server_render_touch(s) FROM (VALUES (OLD.server_id), (NEW.server_id)) v(s) WHERE s IS NOT NULL;
    RETURN NULL;
END
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION port_groups_render_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM server_render_touch(p.server_id) FROM ports p
    WHERE p.id IN (OLD.port_id, NEW.port_id) AND p.server_id IS NOT NULL;
    RETURN NULL;
END
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION server_render_epoch_bump() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE server_render_epoch SET n = n + 1;
    RETURN NULL;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER ports_render_touch AFTER INSERT OR UPDATE OR DELETE ON ports
    FOR EACH ROW EXECUTE FUNCTION ports_render_touch();
CREATE TRIGGER port_groups_render_touch AFTER INSERT OR UPDATE OR DELETE ON port_security_groups
    FOR EACH ROW EXECUTE FUNCTION port_groups_render_touch();
CREATE TRIGGER networks_render_epoch AFTER UPDATE OF name ON networks
    FOR EACH ROW WHEN (OLD.name IS DISTINCT FROM NEW.name) EXECUTE FUNCTION server_render_epoch_bump();
CREATE TRIGGER security_groups_render_epoch AFTER UPDATE OF name ON security_groups
    FOR EACH ROW WHEN (OLD.name IS DISTINCT FROM NEW.name) EXECUTE FUNCTION server_render_epoch_bump();

-- +goose Down
DROP TRIGGER security_groups_render_epoch ON security_groups;
DROP TRIGGER networks_render_epoch ON networks;
DROP TRIGGER port_groups_render_touch ON port_security_groups;
DROP TRIGGER ports_render_touch ON ports;
DROP FUNCTION server_render_epoch_bump();
DROP FUNCTION port_groups_render_touch();
DROP FUNCTION ports_render_touch();
DROP FUNCTION server_render_touch(uuid);
DROP TABLE server_render_epoch;
