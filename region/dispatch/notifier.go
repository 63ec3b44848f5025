// Package dispatch is region's side of the host agents' wire: agents
// register, long-poll the desired state of their host, and report what they
// observed. Changes are announced through PostgreSQL LISTEN/NOTIFY, so an
// agent's long poll wakes whichever region replica wrote the change.
package dispatch

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/lib/pq"
)

// Channel is the NOTIFY channel the store announces host changes on; the
// payload is the host name.
const Channel = "berth_desired"

// Notifier fans PostgreSQL notifications out to waiting long polls.
type Notifier struct {
	log      *slog.Logger
	listener *pq.Listener

	mu      sync.Mutex
	waiters map[string]map[chan struct{}]struct{}
}

// NewNotifier listens on Channel over its own connection to dsn.
func NewNotifier(dsn string, log *slog.Logger) (*Notifier, error) {
	n := &Notifier{log: log, waiters: map[string]map[chan struct{}]struct{}{}}
	n.listener = pq.NewListener(dsn, 100*time.Millisecond, 10*time.Second, func(ev pq.ListenerEventType, err error) {
		if err != nil {
			log.Warn("notify listener", "event", ev, "err", err)
		}
	})
	if err := n.listener.Listen(Channel); err != nil {
		n.listener.Close()
		return nil, err
	}
	return n, nil
}

// Run delivers notifications until ctx ends.
func (n *Notifier) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case note, ok := <-n.listener.Notify:
			if !ok {
				return
			}
			if note == nil {
				// The connection was re-established; notifications may have
				// been lost, so wake everyone to re-read.
				n.wakeAll()
				continue
			}
			n.wake(note.Extra)
		}
	}
}

// Close stops listening.
func (n *Notifier) Close() error { return n.listener.Close() }

// Subscribe returns a channel closed at the next change of host, and a
// function to cancel the subscription. Subscribe before reading state so a
// change between the read and the wait is not missed.
func (n *Notifier) Subscribe(host string) (<-chan struct{}, func()) {
	ch := make(chan struct{})
	n.mu.Lock()
	if n.waiters[host] == nil {
		n.waiters[host] = map[chan struct{}]struct{}{}
	}
	n.waiters[host][ch] = struct{}{}
	n.mu.Unlock()
	return ch, func() {
		n.mu.Lock()
		if _, ok := n.waiters[host][ch]; ok {
			delete(n.waiters[host], ch)
			close(ch)
		}
		if len(n.waiters[host]) == 0 {
			delete(n.waiters, host)
		}
		n.mu.Unlock()
	}
}

func (n *Notifier) wake(host string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for ch := range n.waiters[host] {
		close(ch)
	}
	delete(n.waiters, host)
}

func (n *Notifier) wakeAll() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, ws := range n.waiters {
		for ch := range ws {
			close(ch)
		}
	}
	n.waiters = map[string]map[chan struct{}]struct{}{}
}
