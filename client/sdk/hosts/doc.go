// Package hosts is the SDK for Berth's host API (/v2.1/berth-hosts, admin
// only): every registered host with its capacity, what is used of it, its
// heartbeat age and how many sets it runs.
//
// Example:
//
//	all, err := hosts.List(compute).AllPages(ctx)
//	hs, err := hosts.ExtractHosts(all)
package hosts
