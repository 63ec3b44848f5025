// Package sets is the SDK for Berth's set API (/v2.1/berth-sets): a set is
// a server made of several containers — the infra container that holds the
// network namespace, sidecars and app containers — scheduled as one unit
// on one host. A set has the same id as its server, so every server verb
// (start, stop, logs, delete, …) works on it too.
//
// Example:
//
//	s, err := sets.Create(ctx, compute, sets.CreateOpts{
//		Name: "web", FlavorRef: "1",
//		Containers: []sets.Container{{Name: "app", Image: "demo", Role: sets.RoleApp}},
//	}).Extract()
package sets
