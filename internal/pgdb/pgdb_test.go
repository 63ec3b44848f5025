package pgdb

import (
	"database/sql/driver"
	"errors"
	"fmt"
	"net"
	"syscall"
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
		"57P03": apierr.Unavailable, // the database system is shutting down / starting up
		"57P01": apierr.Unavailable, // terminating connection (admin shutdown)
		"08006": apierr.Unavailable, // connection failure
		"57014": apierr.Internal,    // statement cancelled: not an outage
	} {
		err := Classify(&pq.Error{Code: code})
		if got := apierr.KindOf(err); got != want {
			t.Errorf("Classify(%s) kind %d, want %d", code, got, want)
		}
	}
	for _, err := range []error{driver.ErrBadConn, fmt.Errorf("begin: %w", &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED})} {
		if k := apierr.KindOf(Classify(err)); k != apierr.Unavailable {
			t.Errorf("Classify(%v) kind %d, want Unavailable", err, k)
		}
	}
	if k := apierr.KindOf(Classify(apierr.NotFoundf("x"))); k != apierr.NotFound {
		t.Errorf("Classify changed an apierr kind to %d", k)
	}
	plain := errors.New("x")
	if Classify(plain) != plain || Classify(nil) != nil {
		t.Error("Classify changed a non-PostgreSQL error")
	}
}
