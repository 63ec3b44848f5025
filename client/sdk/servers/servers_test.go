package servers

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"berth/client/sdk/internal/sdktest"
)

const id = "f34b7cb3-2b6e-4f6c-b1b5-1006f7f3a547"

func TestActionsSendBerthBodies(t *testing.T) {
	s := sdktest.New(t)
	s.Handle("POST /v2.1/servers/"+id+"/action", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(202) })
	c := s.Client("v2.1/")
	ctx := context.Background()
	if err := SyncStatus(ctx, c, id).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	if err := PutFile(ctx, c, id, PutFileOpts{Path: "/a", Contents: []byte("hi"), Mode: "0600"}).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	if err := Deploy(ctx, c, id, "img").ExtractErr(); err != nil {
		t.Fatal(err)
	}
	want := []string{`{"berth-syncStatus":null}`, `{"berth-putFile":{"contents":"aGk=","mode":"0600","path":"/a"}}`, `{"rebuild":{"imageRef":"img"}}`}
	for i, r := range s.Requests {
		if r.Body != want[i] {
			t.Errorf("request %d body = %s, want %s", i, r.Body, want[i])
		}
	}
	if err := PutFile(ctx, c, id, PutFileOpts{Path: "/big", Contents: make([]byte, MaxFileSize+1)}).ExtractErr(); err == nil {
		t.Error("a file over 16 MiB must be refused before sending")
	}
}

func TestGetFile(t *testing.T) {
	s := sdktest.New(t)
	s.JSON("POST /v2.1/servers/"+id+"/action", 200, `{"contents": "aGVsbG8=", "size": 5}`)
	b, err := GetFile(context.Background(), s.Client("v2.1/"), id, "/etc/x").Extract()
	if err != nil || string(b) != "hello" {
		t.Errorf("got %q, %v", b, err)
	}
	s.JSON("POST /v2.1/servers/"+id+"/action", 200, `{"contents": "aGVsbG8=", "size": 6}`)
	if _, err := GetFile(context.Background(), s.Client("v2.1/"), id, "/etc/x").Extract(); err == nil {
		t.Error("a size mismatch must be an error")
	}
}

func TestSnapshotImageID(t *testing.T) {
	s := sdktest.New(t)
	s.Handle("POST /v2.1/servers/"+id+"/action", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Location", "http://img:9292/v2/images/abc-123")
		w.WriteHeader(202)
	})
	got, err := Snapshot(context.Background(), s.Client("v2.1/"), id, SnapshotOpts{Name: "snap"}).Extract()
	if err != nil || got != "abc-123" {
		t.Errorf("from Location: %q %v", got, err)
	}
	s.JSON("POST /v2.1/servers/"+id+"/action", 202, `{"image_id": "def-456"}`)
	got, err = Snapshot(context.Background(), s.Client("v2.1/"), id, SnapshotOpts{Name: "snap"}).Extract()
	if err != nil || got != "def-456" {
		t.Errorf("from the 2.45 body: %q %v", got, err)
	}
}

func TestSerialConsoleAndOutput(t *testing.T) {
	s := sdktest.New(t)
	s.Handle("POST /v2.1/servers/"+id+"/action", func(w http.ResponseWriter, r *http.Request) {
		b := make([]byte, 200)
		n, _ := r.Body.Read(b)
		w.Header().Set("Content-Type", "application/json")
		if strings.Contains(string(b[:n]), "os-getSerialConsole") {
			w.Write([]byte(`{"console": {"type": "serial", "url": "ws://r/berth-console/?token=t"}}`))
			return
		}
		w.Write([]byte(`{"output": "log line\n"}`))
	})
	c, err := SerialConsole(context.Background(), s.Client("v2.1/"), id).Extract()
	if err != nil || c.URL != "ws://r/berth-console/?token=t" {
		t.Errorf("console %+v %v", c, err)
	}
	out, err := ConsoleOutput(context.Background(), s.Client("v2.1/"), id, 10).Extract()
	if err != nil || out != "log line\n" {
		t.Errorf("output %q %v", out, err)
	}
	if s.Requests[1].Body != `{"os-getConsoleOutput":{"length":10}}` {
		t.Errorf("body %s", s.Requests[1].Body)
	}
}

func TestLogsQuery(t *testing.T) {
	if q := (LogsOpts{Tail: 20, Follow: true}).ToLogsQuery(); q != "?follow=1&tail=20" {
		t.Errorf("query %q", q)
	}
	if q := (LogsOpts{}).ToLogsQuery(); q != "" {
		t.Errorf("query %q", q)
	}
}

// statuses serves the given server states in order, then the last one.
func statuses(s *sdktest.Server, bodies ...string) {
	var mu sync.Mutex
	i := 0
	s.Handle("GET /v2.1/servers/"+id, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		b := bodies[min(i, len(bodies)-1)]
		i++
		mu.Unlock()
		if b == "" {
			w.WriteHeader(404)
			w.Write([]byte(`{"itemNotFound": {"code": 404, "message": "gone"}}`))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"server": {"id": "` + id + `", ` + b + `}}`))
	})
}

func TestWait(t *testing.T) {
	s := sdktest.New(t)
	statuses(s,
		`"status": "BUILD", "OS-EXT-STS:task_state": "scheduling", "progress": 10`,
		`"status": "BUILD", "OS-EXT-STS:task_state": "spawning", "progress": 50`,
		`"status": "ACTIVE", "OS-EXT-STS:task_state": null, "progress": 100`)
	var seen []string
	srv, err := Wait(context.Background(), s.Client("v2.1/"), id, WaitOpts{Target: []string{"ACTIVE"}, Interval: time.Millisecond,
		OnChange: func(st State) { seen = append(seen, st.String()) }})
	if err != nil || srv.Status != "ACTIVE" {
		t.Fatalf("%v %v", srv, err)
	}
	if strings.Join(seen, ",") != "BUILD (scheduling),BUILD (spawning),ACTIVE" {
		t.Errorf("states seen: %v", seen)
	}
}

func TestWaitError(t *testing.T) {
	s := sdktest.New(t)
	statuses(s, `"status": "ERROR", "fault": {"code": 500, "message": "No valid host was found."}`)
	_, err := Wait(context.Background(), s.Client("v2.1/"), id, WaitOpts{Target: []string{"ACTIVE"}, Interval: time.Millisecond})
	var ee *ErrorStateError
	if !errors.As(err, &ee) || ee.Fault != "No valid host was found." {
		t.Errorf("err = %v", err)
	}
}

func TestWaitGone(t *testing.T) {
	s := sdktest.New(t)
	statuses(s, `"status": "ACTIVE", "OS-EXT-STS:task_state": "deleting"`, "")
	if _, err := Wait(context.Background(), s.Client("v2.1/"), id, WaitOpts{Gone: true, Interval: time.Millisecond}); err != nil {
		t.Errorf("err = %v", err)
	}
}

func TestWaitTimeout(t *testing.T) {
	s := sdktest.New(t)
	statuses(s, `"status": "ACTIVE", "OS-EXT-STS:task_state": "powering-off"`)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	_, err := Wait(ctx, s.Client("v2.1/"), id, WaitOpts{Target: []string{"SHUTOFF"}, Interval: 5 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "timed out waiting for server") {
		t.Errorf("err = %v", err)
	}
}
