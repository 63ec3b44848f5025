-- imagesvc schema: Glance v2 image records and the Docker layer chain.

-- +goose Up

-- A layer is one filesystem diff in a chain. Its identity is the OCI ChainID
-- (the digest of the diff on top of all its parents), so the same diff on a
-- different parent is a different record; parent_chain_id links to the layer
-- below it (NULL for a base layer). Layers are shared between images and
-- outlive them; garbage collection is the images issue's work.
CREATE TABLE layers (
    chain_id        text PRIMARY KEY,
    digest          text NOT NULL,            -- sha256:<hex> of the uncompressed layer tar (diff_id)
    parent_chain_id text REFERENCES layers (chain_id),
    size            bigint NOT NULL CHECK (size >= 0),
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX layers_parent_idx ON layers (parent_chain_id);
CREATE INDEX layers_digest_idx ON layers (digest);

CREATE TABLE images (
    id               uuid PRIMARY KEY,
    name             text CHECK (length(name) <= 255),
    owner            text,
    status           text NOT NULL CHECK (status IN ('queued', 'saving', 'active', 'killed',
                                                     'deleted', 'pending_delete', 'deactivated',
                                                     'uploading', 'importing')),
    visibility       text NOT NULL CHECK (visibility IN ('private', 'public', 'shared', 'community')),
    protected        boolean NOT NULL DEFAULT false,
    os_hidden        boolean NOT NULL DEFAULT false,
    container_format text,
    disk_format      text,
    min_disk         integer NOT NULL DEFAULT 0 CHECK (min_disk >= 0),
    min_ram          integer NOT NULL DEFAULT 0 CHECK (min_ram >= 0),
    size             bigint,
    virtual_size     bigint,
    checksum         text,
    os_hash_algo     text,
    os_hash_value    text,
    tags             text[] NOT NULL DEFAULT '{}',
    properties       jsonb NOT NULL DEFAULT '{}',
    blob_key         text,                    -- key in the blob store once data is uploaded
    top_layer        text REFERENCES layers (chain_id),
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL
);
CREATE INDEX images_owner_idx ON images (owner);
CREATE INDEX images_visibility_idx ON images (visibility);
CREATE INDEX images_created_idx ON images (created_at, id);
CREATE INDEX images_tags_idx ON images USING gin (tags);

-- +goose Down
DROP TABLE images;
DROP TABLE layers;
