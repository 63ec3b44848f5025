package schema

// The agent's own API, served on HostRegister.AgentURL and called only by
// region (header AgentTokenHeader). It is for the operations that cannot
// be desired state: reading logs, opening a shell, moving files, taking a
// snapshot. Paths, all under /agent/v1/sets/{set_id}:
//
//	GET  /logs?tail=N              text/plain: the app container's log (stdout+stderr), last N lines (0 = all)
//	GET  /logs?follow=1&tail=N     same, streamed until the client hangs up
//	POST /password                 SetPassword → 204 (chpasswd inside the app container)
//	PUT  /files?path=/abs/path     body = file bytes (≤ MaxFileBytes) → 204; mode from ?mode=0644
//	GET  /files?path=/abs/path     file bytes (≤ MaxFileBytes); 404 if absent
//	POST /commit                   CommitRequest → CommitResult (docker commit of the app container,
//	                               then its archive uploaded to imagesvc's internal upload endpoint)
//	GET  /diagnostics              Diagnostics
//	POST /sync                     re-read the set from Docker/OVS now → ObservedSet
//	GET  /exec?cmd=/bin/sh&tty=1   websocket: an interactive process in the app container;
//	                               binary messages carry stdin/stdout, a text message
//	                               {"resize": [cols, rows]} resizes the tty
//
// Errors use the Nova fault body (code + message), so region can pass the
// kind on: 404 unknown set, 409 set not running, 400 bad path or size.
//
// Every endpoint but sync and diagnostics takes ?container=NAME to act on
// another container of the set than its primary app (the set API's
// container names; a plain server's app is "app"). Added by the hostagent.

// MaxFileBytes caps a file moved with the files endpoints.
const MaxFileBytes = 16 << 20

// SetPassword is the body of POST /password.
type SetPassword struct {
	// User defaults to "root".
	User     string `json:"user,omitempty"`
	Password string `json:"password"`
}

// CommitRequest is the body of POST /commit.
type CommitRequest struct {
	// ImageID is the imagesvc image (already created, status queued) the
	// snapshot is uploaded into.
	ImageID string `json:"image_id"`
	// ImageURL is imagesvc's base URL as region knows it.
	ImageURL string `json:"image_url"`
}

// CommitResult is the answer to POST /commit.
type CommitResult struct {
	DockerImageID string `json:"docker_image_id"`
	Size          int64  `json:"size"`
}

// Diagnostics are a set's resource counters (Nova's server diagnostics).
type Diagnostics struct {
	State       string              `json:"state"`
	Uptime      int64               `json:"uptime"`
	CPUTimeNS   uint64              `json:"cpu_time_ns"`
	MemoryBytes uint64              `json:"memory_bytes"`
	MemoryLimit uint64              `json:"memory_limit_bytes"`
	Pids        uint64              `json:"pids"`
	NICs        []NICStats          `json:"nics"`
	Containers  []ObservedContainer `json:"containers"`

	// DiskBytes is the size of the containers' writable layers (the
	// flavor's disk is a cap only where the storage driver allows one).
	// Added by the hostagent.
	DiskBytes uint64 `json:"disk_bytes"`
}

// NICStats are one port's counters.
type NICStats struct {
	MAC       string `json:"mac_address"`
	RxOctets  uint64 `json:"rx_octets"`
	RxPackets uint64 `json:"rx_packets"`
	RxDrop    uint64 `json:"rx_drop"`
	TxOctets  uint64 `json:"tx_octets"`
	TxPackets uint64 `json:"tx_packets"`
	TxDrop    uint64 `json:"tx_drop"`
}
