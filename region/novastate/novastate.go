// Package novastate holds Nova's three-part server state (vm_state,
// task_state, power_state) and the status strings clients poll, mapped
// exactly as nova/api/openstack/common.py does, so no client ever sees a
// status Nova would not send.
package novastate

// vm_state values.
const (
	Active           = "active"
	Building         = "building"
	Paused           = "paused"
	Suspended        = "suspended"
	Stopped          = "stopped"
	Rescued          = "rescued"
	Resized          = "resized"
	SoftDeleted      = "soft-delete"
	Deleted          = "deleted"
	Error            = "error"
	Shelved          = "shelved"
	ShelvedOffloaded = "shelved_offloaded"
)

// task_state values used by Berth.
const (
	TaskScheduling       = "scheduling"
	TaskNetworking       = "networking"
	TaskSpawning         = "spawning"
	TaskPoweringOff      = "powering-off"
	TaskPoweringOn       = "powering-on"
	TaskDeleting         = "deleting"
	TaskRebooting        = "rebooting"
	TaskRebootingHard    = "rebooting_hard"
	TaskRebuilding       = "rebuilding"
	TaskPausing          = "pausing"
	TaskUnpausing        = "unpausing"
	TaskSuspending       = "suspending"
	TaskResuming         = "resuming"
	TaskResizePrep       = "resize_prep"
	TaskResizeFinish     = "resize_finish"
	TaskResizeReverting  = "resize_reverting"
	TaskImageSnapshot    = "image_snapshot"
	TaskUpdatingPassword = "updating_password"
	TaskMigrating        = "migrating"
	TaskUnshelving       = "unshelving"
)

// power_state values (nova/compute/power_state.py).
const (
	PowerNoState   = 0
	PowerRunning   = 1
	PowerPaused    = 3
	PowerShutdown  = 4
	PowerCrashed   = 6
	PowerSuspended = 7
)

// stateMap is Nova's _STATE_MAP: per vm_state, "default" plus the task
// states that override it.
var stateMap = map[string]map[string]string{
	Active: {
		"default":                      "ACTIVE",
		TaskRebooting:                  "REBOOT",
		"reboot_pending":               "REBOOT",
		"reboot_started":               "REBOOT",
		TaskRebootingHard:              "HARD_REBOOT",
		"reboot_pending_hard":          "HARD_REBOOT",
		"reboot_started_hard":          "HARD_REBOOT",
		TaskUpdatingPassword:           "PASSWORD",
		TaskRebuilding:                 "REBUILD",
		"rebuild_block_device_mapping": "REBUILD",
		"rebuild_spawning":             "REBUILD",
		TaskMigrating:                  "MIGRATING",
		TaskResizePrep:                 "RESIZE",
		"resize_migrating":             "RESIZE",
		"resize_migrated":              "RESIZE",
		TaskResizeFinish:               "RESIZE",
	},
	Building: {"default": "BUILD"},
	Stopped: {
		"default":                      "SHUTOFF",
		TaskResizePrep:                 "RESIZE",
		"resize_migrating":             "RESIZE",
		"resize_migrated":              "RESIZE",
		TaskResizeFinish:               "RESIZE",
		TaskRebuilding:                 "REBUILD",
		"rebuild_block_device_mapping": "REBUILD",
		"rebuild_spawning":             "REBUILD",
	},
	Resized: {
		"default":           "VERIFY_RESIZE",
		TaskResizeReverting: "REVERT_RESIZE",
	},
	Paused:           {"default": "PAUSED", TaskMigrating: "MIGRATING"},
	Suspended:        {"default": "SUSPENDED"},
	Rescued:          {"default": "RESCUE"},
	Error:            {"default": "ERROR", TaskRebuilding: "REBUILD"},
	Deleted:          {"default": "DELETED"},
	SoftDeleted:      {"default": "SOFT_DELETED"},
	Shelved:          {"default": "SHELVED"},
	ShelvedOffloaded: {"default": "SHELVED_OFFLOADED"},
}

// Status is the API status for a vm_state and task_state ("" = none).
func Status(vmState, taskState string) string {
	m, ok := stateMap[vmState]
	if !ok {
		return "UNKNOWN"
	}
	if s, ok := m[taskState]; ok && taskState != "" {
		return s
	}
	return m["default"]
}

// Filter is the vm_states and task_states a status filter selects.
// TaskStates nil means "any task state"; Exclude lists task states that
// would change the status away from the one asked for.
type Filter struct {
	VMStates   []string
	TaskStates []string
	Exclude    []string
}

// FilterFor maps a status back to states, as Nova's
// task_and_vm_state_from_status does; ok is false for unknown statuses.
func FilterFor(status string) (f Filter, ok bool) {
	for vm, m := range stateMap {
		for task, st := range m {
			if st != status {
				continue
			}
			ok = true
			if task == "default" {
				f.VMStates = appendUnique(f.VMStates, vm)
				for t, other := range m {
					if t != "default" && other != status {
						f.Exclude = appendUnique(f.Exclude, t)
					}
				}
			} else {
				f.VMStates = appendUnique(f.VMStates, vm)
				f.TaskStates = appendUnique(f.TaskStates, task)
			}
		}
	}
	return f, ok
}

func appendUnique(xs []string, x string) []string {
	for _, y := range xs {
		if y == x {
			return xs
		}
	}
	return append(xs, x)
}

// PowerStateOf maps an agent's observed power state name to Nova's number.
func PowerStateOf(name string) int {
	switch name {
	case "running":
		return PowerRunning
	case "paused":
		return PowerPaused
	case "shutdown":
		return PowerShutdown
	case "crashed":
		return PowerCrashed
	case "suspended":
		return PowerSuspended
	}
	return PowerNoState
}
