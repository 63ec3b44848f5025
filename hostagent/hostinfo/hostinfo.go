// Package hostinfo detects the capacity a host offers: CPUs, memory and
// the disk under Docker's root directory.
package hostinfo

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Capacity is what a host offers to sets.
type Capacity struct {
	VCPUs    int
	MemoryMB int
	DiskGB   int
}

// Detect measures the machine: runtime.NumCPU, MemTotal from /proc/meminfo
// and the size of the filesystem holding dockerRoot.
func Detect(dockerRoot string) (Capacity, error) {
	c := Capacity{VCPUs: runtime.NumCPU()}
	mem, err := MemTotalMB("/proc/meminfo")
	if err != nil {
		return c, err
	}
	c.MemoryMB = mem
	disk, err := DiskGB(dockerRoot)
	if err != nil {
		return c, err
	}
	c.DiskGB = disk
	return c, nil
}

// MemTotalMB reads MemTotal from a meminfo file, in MiB.
func MemTotalMB(path string) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("read meminfo: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "MemTotal:" {
			kb, err := strconv.ParseInt(fields[1], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parse MemTotal: %w", err)
			}
			return int(kb / 1024), nil
		}
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("read meminfo: %w", err)
	}
	return 0, fmt.Errorf("no MemTotal in %s", path)
}

// DiskGB is the total size of the filesystem holding path, in GiB.
func DiskGB(path string) (int, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", path, err)
	}
	return int(st.Blocks * uint64(st.Bsize) >> 30), nil
}
