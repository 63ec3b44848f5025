-- +goose Up
-- Neutron's model: a network holds subnets, a subnet hands out addresses
-- to ports, ports carry security groups.
ALTER TABLE networks
    ADD COLUMN admin_state_up boolean NOT NULL DEFAULT true,
    ADD COLUMN mtu            integer NOT NULL DEFAULT 1450,
    ADD COLUMN description    text    NOT NULL DEFAULT '',
    ADD COLUMN updated_at     timestamptz NOT NULL DEFAULT now(),
    ALTER COLUMN cidr DROP NOT NULL;

CREATE TABLE subnets (
    id               uuid PRIMARY KEY,
    network_id       uuid NOT NULL REFERENCES networks (id),
    project_id       text NOT NULL DEFAULT '',
    name             text NOT NULL DEFAULT '',
    description      text NOT NULL DEFAULT '',
    cidr             cidr NOT NULL,
    gateway_ip       inet,
    -- [{"start": "10.0.0.2", "end": "10.0.0.254"}]
    allocation_pools jsonb NOT NULL DEFAULT '[]',
    dns_nameservers  jsonb NOT NULL DEFAULT '[]',
    enable_dhcp      boolean NOT NULL DEFAULT true,
    ip_version       integer NOT NULL DEFAULT 4,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX subnets_network ON subnets (network_id);

-- The default network's CIDR becomes its subnet.
INSERT INTO subnets (id, network_id, project_id, name, cidr, gateway_ip, allocation_pools)
SELECT gen_random_uuid(), id, project_id, name || '-subnet', cidr, gateway_ip,
       jsonb_build_array(jsonb_build_object('start', host(network(cidr) + 2),
                                            'end', host(broadcast(cidr) - 1)))
FROM networks WHERE cidr IS NOT NULL;

ALTER TABLE ports
    ADD COLUMN subnet_id             uuid REFERENCES subnets (id),
    ADD COLUMN name                  text NOT NULL DEFAULT '',
    ADD COLUMN description           text NOT NULL DEFAULT '',
    ADD COLUMN device_id             text NOT NULL DEFAULT '',
    ADD COLUMN admin_state_up        boolean NOT NULL DEFAULT true,
    ADD COLUMN port_security_enabled boolean NOT NULL DEFAULT true,
    ADD COLUMN binding_host          text NOT NULL DEFAULT '',
    -- Ports Nova made for a server go with it; ports a user made and
    -- handed to a server are only detached when the server goes.
    ADD COLUMN auto_delete           boolean NOT NULL DEFAULT false,
    -- The port's place among its server's NICs (eth0, eth1, … in request order).
    ADD COLUMN slot                  integer NOT NULL DEFAULT 0,
    ADD COLUMN updated_at            timestamptz NOT NULL DEFAULT now();
UPDATE ports p SET subnet_id = s.id, device_id = coalesce(p.server_id::text, ''), auto_delete = true
FROM subnets s WHERE s.network_id = p.network_id;

CREATE TABLE security_groups (
    id          uuid PRIMARY KEY,
    project_id  text NOT NULL,
    name        text NOT NULL,
    description text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
-- Neutron makes exactly one "default" group per project.
CREATE UNIQUE INDEX security_groups_one_default ON security_groups (project_id) WHERE name = 'default';

CREATE TABLE security_group_rules (
    id               uuid PRIMARY KEY,
    group_id         uuid NOT NULL REFERENCES security_groups (id) ON DELETE CASCADE,
    project_id       text NOT NULL,
    direction        text NOT NULL CHECK (direction IN ('ingress', 'egress')),
    ethertype        text NOT NULL DEFAULT 'IPv4',
    protocol         text,
    port_range_min   integer,
    port_range_max   integer,
    remote_ip_prefix cidr,
    remote_group_id  uuid REFERENCES security_groups (id) ON DELETE CASCADE,
    description      text NOT NULL DEFAULT '',
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX security_group_rules_group ON security_group_rules (group_id);

CREATE TABLE port_security_groups (
    port_id  uuid NOT NULL REFERENCES ports (id) ON DELETE CASCADE,
    group_id uuid NOT NULL REFERENCES security_groups (id),
    PRIMARY KEY (port_id, group_id)
);

-- +goose Down
DROP TABLE port_security_groups;
DROP TABLE security_group_rules;
DROP TABLE security_groups;
ALTER TABLE ports DROP COLUMN subnet_id, DROP COLUMN name, DROP COLUMN description, DROP COLUMN device_id,
    DROP COLUMN admin_state_up, DROP COLUMN port_security_enabled, DROP COLUMN binding_host, DROP COLUMN auto_delete, DROP COLUMN slot,
    DROP COLUMN updated_at;
DROP TABLE subnets;
ALTER TABLE networks DROP COLUMN admin_state_up, DROP COLUMN mtu, DROP COLUMN description, DROP COLUMN updated_at;
