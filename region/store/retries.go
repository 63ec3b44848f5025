package store

import (
	"fmt"
	"time"
)

// CreateRetryWindow is how long a client's request id keeps naming the
// server its create made: a retry within it returns that server. Clients
// retry a lost answer within seconds; an id reused later is a new request.
const CreateRetryWindow = time.Hour

// RetryKey is the key of the i-th server (from 1) of a create that the
// client sent with request id clientID ("" when the client sent none: a
// server-made id can never be retried). The servers of one multi-create
// get a key each, so a retry finds every one of them.
func RetryKey(clientID string, i int) string {
	if clientID == "" || i == 1 {
		return clientID
	}
	return fmt.Sprintf("%s#%d", clientID, i)
}
