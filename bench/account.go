package main

// CPU and memory accounting: the whole machine from /proc/stat, one process
// from /proc/PID/stat and /proc/PID/status, and the BPF maps a process holds
// from the fdinfo of its bpf-map descriptors.

import (
	"os"
	"strconv"
	"strings"
)

// clkTck is USER_HZ, the unit of /proc/stat and /proc/PID/stat (100 on every
// Linux architecture Go supports).
const clkTck = 100

// machineCPU is the busy and softirq time of every CPU, in seconds.
type machineCPU struct{ busy, softirq float64 }

func readMachineCPU() machineCPU {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return machineCPU{}
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal guest guest_nice
	if len(f) < 9 || f[0] != "cpu" {
		return machineCPU{}
	}
	v := make([]float64, len(f))
	for i := 1; i < len(f); i++ {
		n, _ := strconv.ParseFloat(f[i], 64)
		v[i] = n / clkTck
	}
	// Not idle, not iowait; guest time is already inside user.
	return machineCPU{busy: v[1] + v[2] + v[3] + v[6] + v[7] + v[8], softirq: v[7]}
}

func (a machineCPU) sub(b machineCPU) machineCPU {
	return machineCPU{busy: a.busy - b.busy, softirq: a.softirq - b.softirq}
}

// procCPU is utime+stime of a process (all its threads), in seconds; 0 when
// it is gone.
func procCPU(pid int) float64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// The command name may hold spaces: fields count from the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3 (state)
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseFloat(f[11], 64) // field 14
	st, _ := strconv.ParseFloat(f[12], 64) // field 15
	return (ut + st) / clkTck
}

// procRSS is VmRSS of a process in bytes.
func procRSS(pid int) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n << 10
			}
		}
	}
	return 0
}
