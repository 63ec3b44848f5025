-- +goose Up
-- Neutron's revision_number: every change of a network, subnet or port
-- row bumps it, and an update sent with "If-Match: revision_number=N"
-- applies only while the row is still at N. The store puts N in the
-- transaction-local setting berth.if_revision; the trigger checks it on
-- the first row the transaction changes and clears it, so the other rows
-- the same update touches are not held to it.
ALTER TABLE networks ADD COLUMN revision_number bigint NOT NULL DEFAULT 0;
ALTER TABLE subnets  ADD COLUMN revision_number bigint NOT NULL DEFAULT 0;
ALTER TABLE ports    ADD COLUMN revision_number bigint NOT NULL DEFAULT 0,
                     ADD COLUMN binding_profile jsonb  NOT NULL DEFAULT '{}',
                     ADD COLUMN binding_vnic_type text NOT NULL DEFAULT 'normal';

-- +goose StatementBegin
CREATE FUNCTION neutron_revision() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    want text := current_setting('berth.if_revision', true);
BEGIN
    IF want IS NOT NULL AND want <> '' THEN
        PERFORM set_config('berth.if_revision', '', true);
        IF OLD.revision_number <> want::bigint THEN
            RAISE EXCEPTION 'Constrained to %, but current revision is %', want, OLD.revision_number
                USING ERRCODE = 'BR412';
        END IF;
    END IF;
    NEW.revision_number := OLD.revision_number + 1;
    RETURN NEW;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER networks_revision BEFORE UPDATE ON networks FOR EACH ROW EXECUTE FUNCTION neutron_revision();
CREATE TRIGGER subnets_revision  BEFORE UPDATE ON subnets  FOR EACH ROW EXECUTE FUNCTION neutron_revision();
CREATE TRIGGER ports_revision    BEFORE UPDATE ON ports    FOR EACH ROW EXECUTE FUNCTION neutron_revision();

-- +goose Down
DROP TRIGGER networks_revision ON networks;
DROP TRIGGER subnets_revision ON subnets;
DROP TRIGGER ports_revision ON ports;
DROP FUNCTION neutron_revision();
ALTER TABLE networks DROP COLUMN revision_number;
ALTER TABLE subnets  DROP COLUMN revision_number;
ALTER TABLE ports    DROP COLUMN revision_number, DROP COLUMN binding_profile, DROP COLUMN binding_vnic_type;
