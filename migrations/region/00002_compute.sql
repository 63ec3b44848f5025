-- +goose Up
ALTER TABLE hosts ADD COLUMN agent_url text NOT NULL DEFAULT '',
    ADD COLUMN id bigserial UNIQUE,
    ADD COLUMN forced_down boolean NOT NULL DEFAULT false,
    ADD COLUMN disabled_reason text;

ALTER TABLE servers
    ADD COLUMN reboot_seq      bigint  NOT NULL DEFAULT 0,
    ADD COLUMN reboot_hard     boolean NOT NULL DEFAULT false,
    -- The flavor a resize came from, kept until it is confirmed or reverted:
    -- {"id", "vcpus", "ram_mb", "disk_gb"}.
    ADD COLUMN old_flavor      jsonb,
    ADD COLUMN authorized_keys text,
    ADD COLUMN personality     jsonb   NOT NULL DEFAULT '[]',
    ADD COLUMN locked_by       text,
    ADD COLUMN tags            text[]  NOT NULL DEFAULT '{}';

-- os-keypairs: Nova keeps keypairs per user.
CREATE TABLE keypairs (
    id          bigserial PRIMARY KEY,
    user_id     text NOT NULL,
    name        text NOT NULL,
    type        text NOT NULL DEFAULT 'ssh',
    public_key  text NOT NULL,
    fingerprint text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, name)
);

-- os-quota-sets: per-project overrides of the defaults in the code.
CREATE TABLE quotas (
    project_id  text NOT NULL,
    resource    text NOT NULL,
    hard_limit  integer NOT NULL,
    PRIMARY KEY (project_id, resource)
);

-- os-server-groups.
CREATE TABLE server_groups (
    id          uuid PRIMARY KEY,
    project_id  text NOT NULL,
    user_id     text NOT NULL,
    name        text NOT NULL,
    policy      text NOT NULL,
    rules       jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE server_group_members (
    server_id   uuid PRIMARY KEY REFERENCES servers (id),
    group_id    uuid NOT NULL REFERENCES server_groups (id) ON DELETE CASCADE
);
CREATE INDEX server_group_members_group ON server_group_members (group_id);

-- Serial console tokens (os-getSerialConsole): short-lived, single server.
CREATE TABLE console_tokens (
    token_hash  text PRIMARY KEY,
    server_id   uuid NOT NULL REFERENCES servers (id),
    expires_at  timestamptz NOT NULL
);

-- Private flavors and the projects that may use them.
CREATE TABLE flavor_access (
    flavor_id   text NOT NULL REFERENCES flavors (id),
    project_id  text NOT NULL,
    PRIMARY KEY (flavor_id, project_id)
);

-- +goose Down
DROP TABLE flavor_access;
DROP TABLE console_tokens;
DROP TABLE server_group_members;
DROP TABLE server_groups;
DROP TABLE quotas;
DROP TABLE keypairs;
ALTER TABLE servers DROP COLUMN reboot_seq, DROP COLUMN reboot_hard, DROP COLUMN old_flavor,
    DROP COLUMN authorized_keys, DROP COLUMN personality, DROP COLUMN locked_by, DROP COLUMN tags;
ALTER TABLE hosts DROP COLUMN agent_url, DROP COLUMN id, DROP COLUMN forced_down, DROP COLUMN disabled_reason;
