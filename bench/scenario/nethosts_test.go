package scenario

import (
	"os"
	"syscall"
	"testing"
)

func TestNiceOf(t *testing.T) {
	got, err := niceOf(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// The raw getpriority system call answers 20 - nice.
	prio, err := syscall.Getpriority(syscall.PRIO_PROCESS, 0)
	if err != nil {
		t.Fatal(err)
	}
	if want := 20 - prio; got != want {
		t.Errorf("niceOf(self) = %d, want %d", got, want)
	}
}
