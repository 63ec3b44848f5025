package store

import (
	"context"
	"slices"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"berth/internal/apierr"
	"berth/region/novastate"
)

// MaxServerTags is Nova's limit of tags per server.
const MaxServerTags = 50

// TagChange is one of the tag operations of /servers/{id}/tags.
type TagChange struct {
	// Replace, when true, makes Set the server's whole tag list.
	Replace bool
	// Add is one tag to add (PUT /tags/{tag}).
	Add string
	// Remove is one tag to remove (DELETE /tags/{tag}); NotFound if absent.
	Remove string
	Set    []string
}

// ChangeTags applies a tag operation under the server's row lock and
// returns the resulting tags. Nova refuses tag changes while the server
// is being built or deleted (409); Berth checks the same task states.
func (s *Store) ChangeTags(ctx context.Context, sc Scope, id string, ch TagChange) ([]string, error) {
	var out []string
	err := s.tx(ctx, func(tx *sqlx.Tx) error {
		srv, err := getServer(ctx, tx, sc, id, true)
		if err != nil {
			return err
		}
		if srv.VMState == novastate.Building || srv.TaskState.String == novastate.TaskDeleting {
			return apierr.Conflictf("Cannot 'update tags' instance %s while it is in vm_state %s", id, srv.VMState)
		}
		tags := append([]string{}, srv.Tags...)
		switch {
		case ch.Replace:
			tags = dedupe(ch.Set)
		case ch.Add != "":
			if !slices.Contains(tags, ch.Add) {
				tags = append(tags, ch.Add)
			}
		case ch.Remove != "":
			i := slices.Index(tags, ch.Remove)
			if i < 0 {
				return apierr.NotFoundf("Tag %s could not be found.", ch.Remove)
			}
			tags = append(tags[:i], tags[i+1:]...)
		}
		if len(tags) > MaxServerTags {
			return apierr.Invalidf("The number of tags exceeded the per-server limit %d", MaxServerTags)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE servers SET tags = $2, updated_at = now() WHERE id = $1`,
			id, pq.StringArray(tags)); err != nil {
			return err
		}
		out = tags
		return nil
	})
	return out, err
}

func dedupe(xs []string) []string {
	out := []string{}
	for _, x := range xs {
		if !slices.Contains(out, x) {
			out = append(out, x)
		}
	}
	return out
}

func nonNil(xs []string) []string {
	if xs == nil {
		return []string{}
	}
	return xs
}
