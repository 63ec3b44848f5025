package keystone

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// BenchmarkValidateCached is what every authenticated request pays once
// its token is in the cache (make bench reports the same number as 4e).
func BenchmarkValidateCached(b *testing.B) {
	ks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"token": map[string]any{
			"expires_at": time.Now().Add(time.Hour).UTC().Format(time.RFC3339),
			"user":       map[string]any{"id": "u1", "name": "demo", "domain": map[string]string{"id": "default"}},
			"project":    map[string]any{"id": "p1", "name": "demo", "domain": map[string]string{"id": "default"}},
			"roles":      []map[string]string{{"name": "member"}},
		}})
	}))
	defer ks.Close()
	v := NewValidator(ks.URL+"/v3", time.Hour, nil)
	ctx := context.Background()
	if _, err := v.Validate(ctx, "tok"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Validate(ctx, "tok"); err != nil {
			b.Fatal(err)
		}
	}
}
