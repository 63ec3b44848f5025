package main

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"berth/imagesvc/api"
	"berth/imagesvc/content"
	"berth/imagesvc/registry"
	"berth/imagesvc/store"
)

// janitor does imagesvc's periodic work: it puts uploads whose process
// died back where they came from (their lease ran out), expires idle
// registry uploads, and collects unused layers and blobs.
type janitor struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func startJanitor(st *store.Store, cs *content.Store, a *api.Server, reg *registry.Registry, lease, gcEvery time.Duration, log *slog.Logger) *janitor {
	ctx, cancel := context.WithCancel(context.Background())
	j := &janitor{cancel: cancel}
	log = log.With("component", "imagesvc-janitor")
	recoverLeases := func() {
		ids, err := st.RecoverExpiredLeases(ctx)
		if err != nil {
			log.Error("cannot recover interrupted uploads", "err", err)
		}
		for _, id := range ids {
			log.Warn("upload interrupted (its process stopped); image put back", "image_id", id)
		}
	}
	recoverLeases()
	j.wg.Add(2)
	go func() {
		defer j.wg.Done()
		if n, err := a.ConvertLegacyImages(ctx); err != nil && ctx.Err() == nil {
			log.Error("moving docker images to layer blobs failed", "err", err, "converted", n)
		} else if n > 0 {
			log.Info("docker images moved to layer blobs", "converted", n)
		}
	}()
	go func() {
		defer j.wg.Done()
		tick := time.NewTicker(max(lease/2, time.Second))
		defer tick.Stop()
		lastGC := time.Now()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			recoverLeases()
			reg.ExpireUploads()
			if time.Since(lastGC) >= gcEvery {
				lastGC = time.Now()
				if _, _, err := cs.CollectGarbage(ctx, nil); err != nil && ctx.Err() == nil {
					log.Error("garbage collection failed", "err", err)
				}
			}
		}
	}()
	return j
}

func (j *janitor) stop() {
	j.cancel()
	j.wg.Wait()
}
