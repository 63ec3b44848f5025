-- +goose Up
-- The request id a client sent with a server create, so that the same
-- create retried (the client lost the first 202) returns the first server
-- instead of making a second one (issue 9). Scoped to the project and user
-- that sent it; a row older than the store's retry window no longer
-- counts and is replaced by the next create using the id.
CREATE TABLE server_create_requests (
    project_id  text NOT NULL,
    user_id     text NOT NULL,
    request_id  text NOT NULL,
    server_id   uuid NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, user_id, request_id)
);
CREATE INDEX server_create_requests_age ON server_create_requests (project_id, user_id, created_at);

-- +goose Down
DROP TABLE server_create_requests;
