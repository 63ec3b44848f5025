package novastate

import (
	"slices"
	"testing"
)

func TestStatus(t *testing.T) {
	tests := []struct{ vm, task, want string }{
		{Building, TaskScheduling, "BUILD"},
		{Building, "", "BUILD"},
		{Active, "", "ACTIVE"},
		// While deleting, Nova still shows ACTIVE / SHUTOFF (terraform relies on it).
		{Active, TaskDeleting, "ACTIVE"},
		{Stopped, TaskDeleting, "SHUTOFF"},
		{Active, TaskPoweringOff, "ACTIVE"},
		{Stopped, TaskPoweringOn, "SHUTOFF"},
		{Active, TaskRebooting, "REBOOT"},
		{Active, TaskRebootingHard, "HARD_REBOOT"},
		{Stopped, TaskRebuilding, "REBUILD"},
		{Resized, "", "VERIFY_RESIZE"},
		{Resized, TaskResizeReverting, "REVERT_RESIZE"},
		{Error, "", "ERROR"},
		{Error, TaskRebuilding, "REBUILD"},
		{Paused, "", "PAUSED"},
		{Suspended, "", "SUSPENDED"},
		{Deleted, "", "DELETED"},
		{"bogus", "", "UNKNOWN"},
	}
	for _, tt := range tests {
		t.Run(tt.vm+"/"+tt.task, func(t *testing.T) {
			if got := Status(tt.vm, tt.task); got != tt.want {
				t.Errorf("Status(%q, %q) = %q, want %q", tt.vm, tt.task, got, tt.want)
			}
		})
	}
}

func TestFilterForRoundTrips(t *testing.T) {
	// Every (vm, task) pair must be selected by the filter of its own status
	// and by no other status's filter.
	statuses := map[string]bool{}
	for _, m := range stateMap {
		for _, st := range m {
			statuses[st] = true
		}
	}
	tasks := []string{"", TaskDeleting, TaskPoweringOff, TaskRebooting, TaskRebuilding, TaskResizePrep, TaskMigrating}
	for vm := range stateMap {
		for _, task := range tasks {
			want := Status(vm, task)
			for st := range statuses {
				f, ok := FilterFor(st)
				if !ok {
					t.Fatalf("FilterFor(%q) unknown", st)
				}
				sel := slices.Contains(f.VMStates, vm)
				if f.TaskStates != nil {
					sel = sel && slices.Contains(f.TaskStates, task)
				} else if task != "" {
					sel = sel && !slices.Contains(f.Exclude, task)
				}
				if sel != (st == want) {
					t.Errorf("status filter %q selects (%s, %q) = %v; its status is %q", st, vm, task, sel, want)
				}
			}
		}
	}
	if _, ok := FilterFor("NOPE"); ok {
		t.Error("FilterFor(NOPE) ok, want unknown")
	}
}

func TestPowerStateOf(t *testing.T) {
	for name, want := range map[string]int{"running": 1, "paused": 3, "shutdown": 4, "crashed": 6, "nostate": 0, "": 0} {
		if got := PowerStateOf(name); got != want {
			t.Errorf("PowerStateOf(%q) = %d, want %d", name, got, want)
		}
	}
}
