-- +goose Up
-- Microversion 2.47 embeds the server's flavor (name, ephemeral, swap
-- included) in the server body. The server keeps its own copy, taken
-- whenever flavor_id changes (create, resize, revert), so the body stays
-- right after the flavor is changed or deleted, as Nova's embedded
-- instance flavor does.
ALTER TABLE servers
    ADD COLUMN flavor_name         text    NOT NULL DEFAULT '',
    ADD COLUMN flavor_ephemeral_gb integer NOT NULL DEFAULT 0,
    ADD COLUMN flavor_swap_mb      integer NOT NULL DEFAULT 0;

UPDATE servers s SET flavor_name = f.name, flavor_ephemeral_gb = f.ephemeral_gb, flavor_swap_mb = f.swap_mb
FROM flavors f WHERE f.id = s.flavor_id;

-- +goose StatementBegin
CREATE FUNCTION servers_flavor_copy() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    SELECT f.name, f.ephemeral_gb, f.swap_mb
      INTO NEW.flavor_name, NEW.flavor_ephemeral_gb, NEW.flavor_swap_mb
      FROM flavors f WHERE f.id = NEW.flavor_id;
    IF NOT FOUND THEN
        NEW.flavor_name := COALESCE(NEW.flavor_name, '');
        NEW.flavor_ephemeral_gb := COALESCE(NEW.flavor_ephemeral_gb, 0);
        NEW.flavor_swap_mb := COALESCE(NEW.flavor_swap_mb, 0);
    END IF;
    RETURN NEW;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER servers_flavor_copy BEFORE INSERT OR UPDATE OF flavor_id ON servers
    FOR EACH ROW EXECUTE FUNCTION servers_flavor_copy();

-- +goose Down
DROP TRIGGER servers_flavor_copy ON servers;
DROP FUNCTION servers_flavor_copy();
ALTER TABLE servers DROP COLUMN flavor_name, DROP COLUMN flavor_ephemeral_gb, DROP COLUMN flavor_swap_mb;
