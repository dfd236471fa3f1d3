package kern

import (
	"os"
	"regexp"
	"strconv"
	"testing"
)

// TestCountersMatchHeader checks that the Go mirror of enum xlb_counter agrees
// with structs.h, name by name and number by number.
func TestCountersMatchHeader(t *testing.T) {
	src, err := os.ReadFile("bpf/structs.h")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`(?m)^\s*XLB_CNT_([A-Z0-9_]+)\s*=\s*(\d+),`)
	found := re.FindAllStringSubmatch(string(src), -1)
	if len(found) == 0 {
		t.Fatal("no XLB_CNT_ entries found in structs.h")
	}
	if len(found) != int(CounterMax) {
		t.Fatalf("structs.h has %d counters, kern.go %d", len(found), CounterMax)
	}
	for _, m := range found {
		n, _ := strconv.Atoi(m[2])
		want := toLowerSnake(m[1])
		if got := Counter(n).String(); got != want {
			t.Errorf("counter %d: Go name %q, C name %q", n, got, want)
		}
	}
}

func toLowerSnake(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

func TestSpecParsesEmbeddedObject(t *testing.T) {
	spec, err := Spec()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := spec.Programs[ProgramName]; !ok {
		t.Errorf("program %s missing from embedded object", ProgramName)
	}
	m, ok := spec.Maps[StatsMapName]
	if !ok {
		t.Fatalf("map %s missing from embedded object", StatsMapName)
	}
	if m.MaxEntries != uint32(CounterMax) {
		t.Errorf("map %s has %d entries, want %d (one per counter)", StatsMapName, m.MaxEntries, CounterMax)
	}
	if spec.License != "GPL" {
		t.Errorf("license %q, want GPL", spec.License)
	}
}
