package compute

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"

	"berth/internal/apierr"
	"berth/region/novastate"
	"berth/region/store"
)

// createBackup is {"createBackup": {"name", "backup_type", "rotation",
// "metadata"?}}: a snapshot marked image_type=backup with its
// backup_type, after which only the newest `rotation` backups of that
// type of this server are kept. Rotation 0 makes no image and deletes
// them all, as Nova does.
func (a *API) createBackup(w http.ResponseWriter, r *http.Request, c store.Caller, id string, arg json.RawMessage) error {
	var body struct {
		Name       *string           `json:"name"`
		BackupType *string           `json:"backup_type"`
		Rotation   *json.Number      `json:"rotation"`
		Metadata   map[string]string `json:"metadata"`
	}
	if err := decodeArg("createBackup", arg, &body); err != nil {
		return err
	}
	switch {
	case body.Name == nil:
		return apierr.Invalidf("Invalid input for field/attribute createBackup. 'name' is a required property.")
	case body.BackupType == nil:
		return apierr.Invalidf("Invalid input for field/attribute createBackup. 'backup_type' is a required property.")
	case body.Rotation == nil:
		return apierr.Invalidf("Invalid input for field/attribute createBackup. 'rotation' is a required property.")
	}
	rotation, err := body.Rotation.Int64()
	if err != nil || rotation < 0 {
		return apierr.Invalidf("Invalid input for field/attribute rotation. Value: %s. It must be an integer of 0 or more.", body.Rotation)
	}
	if err := validName("name", *body.Name); err != nil {
		return err
	}
	if *body.BackupType == "" || len(*body.BackupType) > 255 {
		return apierr.Invalidf("Invalid input for field/attribute backup_type. It must be 1 to 255 characters long.")
	}
	backups := url.Values{"instance_uuid": {id}, "image_type": {"backup"}, "backup_type": {*body.BackupType},
		"sort_key": {"created_at"}, "sort_dir": {"desc"}}
	if rotation == 0 {
		if _, _, err := a.agentOf(r.Context(), c, id, "createBackup",
			novastate.Active, novastate.Stopped, novastate.Paused, novastate.Suspended); err != nil {
			return err
		}
		a.rotateBackups(context.WithoutCancel(r.Context()), identity(r.Context()).Token, id, backups, 0)
		w.WriteHeader(http.StatusAccepted)
		return nil
	}
	img, err := a.snapshot(r, c, id, "createBackup", *body.Name, body.Metadata,
		map[string]string{"image_type": "backup", "backup_type": *body.BackupType},
		func(ctx context.Context, token, _, _ string) { a.rotateBackups(ctx, token, id, backups, int(rotation)) })
	if err != nil {
		return err
	}
	a.imageAccepted(w, r, img.ID)
	return nil
}

// rotateBackups deletes the server's backups matched by q beyond the
// newest keep. Failures are logged: the backup itself has succeeded.
func (a *API) rotateBackups(ctx context.Context, token, serverID string, q url.Values, keep int) {
	imgs, err := a.cfg.Images.List(ctx, token, q)
	if err != nil {
		a.log.Warn("backup rotation: list", "server_id", serverID, "err", err)
		return
	}
	for i := keep; i < len(imgs); i++ {
		if err := a.cfg.Images.Delete(ctx, token, imgs[i].ID); err != nil && !apierr.Is(err, apierr.NotFound) {
			a.log.Warn("backup rotation: delete", "server_id", serverID, "image_id", imgs[i].ID, "err", err)
			continue
		}
		a.log.Info("backup rotated out", "server_id", serverID, "image_id", imgs[i].ID)
	}
}
