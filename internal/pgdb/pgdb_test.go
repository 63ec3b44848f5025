package pgdb

import (
	"errors"
	"testing"

	"github.com/lib/pq"

	"berth/internal/apierr"
)

func TestClassify(t *testing.T) {
	for code, want := range map[pq.ErrorCode]apierr.Kind{
		"22021": apierr.Invalid,  // invalid byte sequence for encoding
		"22P05": apierr.Invalid,  // untranslatable character (\u0000)
		"22003": apierr.Invalid,  // numeric value out of range
		"23505": apierr.Internal, // unique violation: the store maps it itself
		"40001": apierr.Internal,
	} {
		err := Classify(&pq.Error{Code: code})
		if got := apierr.KindOf(err); got != want {
			t.Errorf("Classify(%s) kind %d, want %d", code, got, want)
		}
	}
	plain := errors.New("x")
	if Classify(plain) != plain || Classify(nil) != nil {
		t.Error("Classify changed a non-PostgreSQL error")
	}
}
