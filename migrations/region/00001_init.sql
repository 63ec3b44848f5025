-- +goose Up
CREATE TABLE flavors (
    id           text PRIMARY KEY,
    name         text NOT NULL,
    vcpus        integer NOT NULL CHECK (vcpus > 0),
    ram_mb       integer NOT NULL CHECK (ram_mb > 0),
    disk_gb      integer NOT NULL CHECK (disk_gb >= 0),
    ephemeral_gb integer NOT NULL DEFAULT 0,
    swap_mb      integer NOT NULL DEFAULT 0,
    rxtx_factor  double precision NOT NULL DEFAULT 1.0,
    is_public    boolean NOT NULL DEFAULT true,
    disabled     boolean NOT NULL DEFAULT false,
    description  text,
    extra_specs  jsonb NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now(),
    deleted_at   timestamptz
);
CREATE UNIQUE INDEX flavors_name_live ON flavors (name) WHERE deleted_at IS NULL;

-- Nova's classic sizes (nova-manage's defaults, as devstack creates them).
INSERT INTO flavors (id, name, vcpus, ram_mb, disk_gb) VALUES
    ('1', 'm1.tiny',   1,  512,  1),
    ('2', 'm1.small',  1, 2048, 20),
    ('3', 'm1.medium', 2, 4096, 40),
    ('4', 'm1.large',  4, 8192, 80);

CREATE TABLE hosts (
    name            text PRIMARY KEY,
    vcpus           integer NOT NULL,
    memory_mb       integer NOT NULL,
    disk_gb         integer NOT NULL,
    -- Overcommit ratios, Nova's defaults (cpu 16, ram 1.5, disk 1.0).
    cpu_ratio       double precision NOT NULL DEFAULT 16.0,
    ram_ratio       double precision NOT NULL DEFAULT 1.5,
    disk_ratio      double precision NOT NULL DEFAULT 1.0,
    vcpus_used      integer NOT NULL DEFAULT 0,
    memory_mb_used  integer NOT NULL DEFAULT 0,
    disk_gb_used    integer NOT NULL DEFAULT 0,
    labels          jsonb NOT NULL DEFAULT '{}',
    agent_version   text NOT NULL DEFAULT '',
    disabled        boolean NOT NULL DEFAULT false,
    -- desired_index grows with every change to this host's desired sets;
    -- agents long-poll on it.
    desired_index   bigint NOT NULL DEFAULT 1,
    last_heartbeat  timestamptz NOT NULL DEFAULT now(),
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (vcpus_used >= 0 AND memory_mb_used >= 0 AND disk_gb_used >= 0)
);

CREATE TABLE networks (
    id          uuid PRIMARY KEY,
    name        text NOT NULL,
    project_id  text NOT NULL DEFAULT '',
    cidr        cidr NOT NULL,
    gateway_ip  inet,
    shared      boolean NOT NULL DEFAULT false,
    is_default  boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX networks_one_default ON networks (is_default) WHERE is_default;

CREATE TABLE servers (
    id                  uuid PRIMARY KEY,
    project_id          text NOT NULL,
    user_id             text NOT NULL,
    name                text NOT NULL,
    description         text,
    host                text REFERENCES hosts (name),
    availability_zone   text NOT NULL DEFAULT 'nova',
    image_id            text NOT NULL,
    docker_image_id     text NOT NULL DEFAULT '',
    flavor_id           text NOT NULL,
    vcpus               integer NOT NULL,
    ram_mb              integer NOT NULL,
    disk_gb             integer NOT NULL,
    vm_state            text NOT NULL,
    task_state          text,
    power_state         integer NOT NULL DEFAULT 0,
    progress            integer NOT NULL DEFAULT 0,
    -- What the host should make of the set: running, stopped or deleted.
    desired_state       text NOT NULL DEFAULT 'running',
    generation          bigint NOT NULL DEFAULT 1,
    observed_generation bigint NOT NULL DEFAULT 0,
    containers          jsonb NOT NULL DEFAULT '[]',
    fault               jsonb,
    metadata            jsonb NOT NULL DEFAULT '{}',
    key_name            text,
    user_data           text,
    access_ipv4         text NOT NULL DEFAULT '',
    access_ipv6         text NOT NULL DEFAULT '',
    locked              boolean NOT NULL DEFAULT false,
    launched_at         timestamptz,
    terminated_at       timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    deleted_at          timestamptz
);
CREATE INDEX servers_project_live ON servers (project_id, created_at DESC, id) WHERE deleted_at IS NULL;
CREATE INDEX servers_host_live ON servers (host) WHERE deleted_at IS NULL;

CREATE TABLE ports (
    id           uuid PRIMARY KEY,
    network_id   uuid NOT NULL REFERENCES networks (id),
    project_id   text NOT NULL,
    server_id    uuid REFERENCES servers (id),
    mac_address  macaddr NOT NULL UNIQUE,
    ip_address   inet NOT NULL,
    device_owner text NOT NULL DEFAULT 'compute:nova',
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (network_id, ip_address)
);
CREATE INDEX ports_server ON ports (server_id);

-- os-instance-actions: every action on a server, with the request that
-- asked for it, and its events as the work proceeds.
CREATE TABLE instance_actions (
    id          bigserial PRIMARY KEY,
    server_id   uuid NOT NULL REFERENCES servers (id),
    action      text NOT NULL,
    request_id  text NOT NULL,
    project_id  text NOT NULL,
    user_id     text NOT NULL,
    message     text,
    start_time  timestamptz NOT NULL DEFAULT now(),
    finish_time timestamptz,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX instance_actions_server ON instance_actions (server_id, start_time);

CREATE TABLE instance_action_events (
    id          bigserial PRIMARY KEY,
    action_id   bigint NOT NULL REFERENCES instance_actions (id),
    event       text NOT NULL,
    host        text,
    result      text,
    traceback   text,
    start_time  timestamptz NOT NULL DEFAULT now(),
    finish_time timestamptz
);
CREATE INDEX instance_action_events_action ON instance_action_events (action_id);

-- +goose Down
DROP TABLE instance_action_events;
DROP TABLE instance_actions;
DROP TABLE ports;
DROP TABLE servers;
DROP TABLE networks;
DROP TABLE hosts;
DROP TABLE flavors;
