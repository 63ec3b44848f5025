-- +goose Up
-- A number per security group, unique and stable for its life: hosts use
-- it as the OpenFlow conjunction id of rules whose remote is the group
-- (see hostagent/flows/groups.go). Existing groups are numbered now.
ALTER TABLE security_groups ADD COLUMN tag serial UNIQUE;
-- Members of a group (desired state of every host whose ports name it)
-- and the rules that name a group as their remote.
CREATE INDEX port_security_groups_group ON port_security_groups (group_id);
CREATE INDEX security_group_rules_remote ON security_group_rules (remote_group_id)
    WHERE remote_group_id IS NOT NULL;

-- +goose Down
DROP INDEX security_group_rules_remote;
DROP INDEX port_security_groups_group;
ALTER TABLE security_groups DROP COLUMN tag;
