-- imagesvc: content-addressed blobs shared by images, each image's layer
-- list, image members, the registry's tags and upload grants, and upload
-- leases (crash recovery).

-- +goose Up

-- A blob is content stored once under its digest (key sha256/<2 hex>/<hex>
-- in the blob store): a layer in the form it arrived (a tar, or a gzip of
-- one), an image config, a registry manifest, or an archive recipe. Rows
-- are only ever deleted by garbage collection, and only when no image
-- references them and they were not used for a grace period (an upload in
-- flight touches last_used_at before it references a blob).
CREATE TABLE blobs (
    digest       text PRIMARY KEY,               -- sha256:<hex> of the stored bytes
    size         bigint NOT NULL CHECK (size >= 0),
    diff_id      text,                           -- sha256 of the uncompressed bytes (= digest unless gzip)
    created_at   timestamptz NOT NULL,
    last_used_at timestamptz NOT NULL
);
CREATE INDEX blobs_diff_id_idx ON blobs (diff_id);
CREATE INDEX blobs_last_used_idx ON blobs (last_used_at);

-- What a docker image's data is made of. recipe_digest is the blob that
-- lays out the image's docker archive (raw tar bytes and references to
-- blobs): GET file plays it back. manifest_digest is the registry
-- manifest docker pull gets.
ALTER TABLE images
    ADD COLUMN config_digest       text REFERENCES blobs (digest),
    ADD COLUMN manifest_digest     text REFERENCES blobs (digest),
    ADD COLUMN manifest_media_type text,
    ADD COLUMN recipe_digest       text REFERENCES blobs (digest),
    ADD COLUMN staging_key         text,          -- blob key of data staged for import
    ADD COLUMN lease_expires_at    timestamptz;   -- set while an upload or import is in flight
CREATE INDEX images_config_idx ON images (config_digest);
CREATE INDEX images_manifest_idx ON images (manifest_digest);
CREATE INDEX images_recipe_idx ON images (recipe_digest);
CREATE INDEX images_lease_idx ON images (lease_expires_at) WHERE lease_expires_at IS NOT NULL;

-- An image's layers, base first: the layer record (shared, with its
-- parent) and the blob this image's data uses for it.
CREATE TABLE image_layers (
    image_id    uuid NOT NULL REFERENCES images (id) ON DELETE CASCADE,
    position    integer NOT NULL CHECK (position >= 0),
    chain_id    text NOT NULL REFERENCES layers (chain_id),
    blob_digest text REFERENCES blobs (digest),  -- NULL for images recorded before blobs existed
    media_type  text,
    PRIMARY KEY (image_id, position)
);
CREATE INDEX image_layers_chain_idx ON image_layers (chain_id);
CREATE INDEX image_layers_blob_idx ON image_layers (blob_digest);

-- Images recorded by 00001 knew only their top layer: list their chains.
WITH RECURSIVE chain AS (
    SELECT i.id AS image_id, l.chain_id, l.parent_chain_id, 0 AS depth
    FROM images i JOIN layers l ON l.chain_id = i.top_layer
    UNION ALL
    SELECT c.image_id, l.chain_id, l.parent_chain_id, c.depth + 1
    FROM chain c JOIN layers l ON l.chain_id = c.parent_chain_id
)
INSERT INTO image_layers (image_id, position, chain_id)
SELECT image_id, max(depth) OVER (PARTITION BY image_id) - depth, chain_id FROM chain;

-- Glance image members: projects a shared image is shared with.
CREATE TABLE image_members (
    image_id   uuid NOT NULL REFERENCES images (id) ON DELETE CASCADE,
    member     text NOT NULL CHECK (length(member) <= 255),
    status     text NOT NULL CHECK (status IN ('pending', 'accepted', 'rejected')),
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (image_id, member)
);
CREATE INDEX image_members_member_idx ON image_members (member);

-- Project names seen in tokens, so registry repository names
-- (<project name>/<repository>) resolve to owners (project ids).
CREATE TABLE projects (
    id         text PRIMARY KEY,
    name       text NOT NULL,
    domain_id  text NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE UNIQUE INDEX projects_name_idx ON projects (lower(name), domain_id);

-- Registry tags: <project>/<repository>:<tag> → image.
CREATE TABLE registry_tags (
    project_id text NOT NULL,
    repository text NOT NULL,
    tag        text NOT NULL,
    image_id   uuid NOT NULL REFERENCES images (id) ON DELETE CASCADE,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (project_id, repository, tag)
);
CREATE INDEX registry_tags_image_idx ON registry_tags (image_id);

-- A project that uploaded a blob through the registry may use it (HEAD,
-- mount, reference it from a manifest) before any image does.
CREATE TABLE blob_grants (
    project_id text NOT NULL,
    digest     text NOT NULL REFERENCES blobs (digest) ON DELETE CASCADE,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (project_id, digest)
);
CREATE INDEX blob_grants_digest_idx ON blob_grants (digest);

-- +goose Down
DROP TABLE blob_grants;
DROP TABLE registry_tags;
DROP TABLE projects;
DROP TABLE image_members;
DROP TABLE image_layers;
ALTER TABLE images
    DROP COLUMN lease_expires_at,
    DROP COLUMN staging_key,
    DROP COLUMN recipe_digest,
    DROP COLUMN manifest_media_type,
    DROP COLUMN manifest_digest,
    DROP COLUMN config_digest;
DROP TABLE blobs;
