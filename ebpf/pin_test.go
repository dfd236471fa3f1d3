package ebpf

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// bpffsTempDir is a fresh directory on bpffs, removed with everything pinned
// in it when the test ends.
func bpffsTempDir(t *testing.T) string {
	t.Helper()
	requireRoot(t)
	if err := EnsureBPFFS(DefaultBPFFS); err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp(DefaultBPFFS, "xlb-ebpf-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return dir
}

func TestIsBPFFS(t *testing.T) {
	if ok, err := IsBPFFS(os.TempDir()); err != nil || ok {
		t.Errorf("IsBPFFS(%s) = %v, %v", os.TempDir(), ok, err)
	}
	if ok, err := IsBPFFS("/nonexistent/xlb"); err != nil || ok {
		t.Errorf("IsBPFFS(missing) = %v, %v", ok, err)
	}
	dir := bpffsTempDir(t)
	if ok, err := IsBPFFS(dir); err != nil || !ok {
		t.Errorf("IsBPFFS(%s) = %v, %v", dir, ok, err)
	}
}

func TestPinMapAndProgram(t *testing.T) {
	dir := bpffsTempDir(t)
	coll := loadXLB(t, nil)
	stats, prog := coll.Maps["xlb_stats"], coll.Programs["xlb_xdp"]

	mapPath, progPath := filepath.Join(dir, "stats"), filepath.Join(dir, "prog")
	if err := stats.Pin(mapPath); err != nil {
		t.Fatal(err)
	}
	if err := prog.Pin(progPath); err != nil {
		t.Fatal(err)
	}
	if err := stats.Pin(mapPath); err == nil {
		t.Error("pinning over an existing pin succeeded")
	}

	m, err := LoadPinnedMap(mapPath)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.Name() != "xlb_stats" || m.Type() != PerCPUArray || m.KeySize() != 4 || m.ValueSize() != 8 ||
		m.MaxEntries() != stats.MaxEntries() {
		t.Errorf("pinned map: %+v", m.Spec())
	}
	p, err := LoadPinnedProgram(progPath)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if p.Name() != "xlb_xdp" || p.Type() != XDP {
		t.Errorf("pinned program: %s %s", p.Name(), p.Type())
	}
	// The pinned map is the same map: a run of the pinned program counts in it.
	if _, err := p.TestRun(&TestRunOptions{Data: tcpPacket()}); err != nil {
		t.Fatal(err)
	}
	if v, err := m.SumPerCPUUint64(Uint32Key(cntTCP)); err != nil || v != 1 {
		t.Errorf("counter through pins: %d, %v", v, err)
	}
	// A replacement from a pin.
	coll2 := loadXLB(t, &CollectionOptions{ReplaceMaps: map[string]*Map{"xlb_stats": m}})
	if coll2.Maps["xlb_stats"] != m {
		t.Error("pinned map not reused")
	}

	if err := Unpin(mapPath); err != nil {
		t.Fatal(err)
	}
	if err := Unpin(mapPath); err != nil {
		t.Errorf("unpin of a missing pin: %v", err)
	}
	if _, err := LoadPinnedMap(mapPath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("load of an unpinned map: %v", err)
	}
	if err := Unpin(progPath); err != nil {
		t.Fatal(err)
	}

	tmp := t.TempDir()
	if err := stats.Pin(filepath.Join(tmp, "stats")); !errors.Is(err, ErrNotBPFFS) {
		t.Errorf("pin outside bpffs: %v", err)
	}
	if _, err := LoadPinnedMap(filepath.Join(tmp, "stats")); !errors.Is(err, ErrNotBPFFS) {
		t.Errorf("load pin outside bpffs: %v", err)
	}
}

func TestPinDir(t *testing.T) {
	dir := filepath.Join(bpffsTempDir(t), "state")
	coll := loadXLB(t, nil)
	objs := map[string]Pinner{"stats": coll.Maps["xlb_stats"], "prog": coll.Programs["xlb_xdp"]}
	if err := PinDir(dir, objs); err != nil {
		t.Fatal(err)
	}
	names := func() []string {
		t.Helper()
		ents, err := os.ReadDir(filepath.Dir(dir))
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range ents {
			sub, _ := os.ReadDir(filepath.Join(filepath.Dir(dir), e.Name()))
			for _, s := range sub {
				out = append(out, e.Name()+"/"+s.Name())
			}
		}
		return out
	}
	if got := names(); len(got) != 2 || got[0] != "state/prog" || got[1] != "state/stats" {
		t.Fatalf("after PinDir: %v", got)
	}
	first, err := LoadPinnedMap(filepath.Join(dir, "stats"))
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	firstID, _ := first.ID()

	// Replacing the directory swaps in the new set and removes the old one.
	other, err := NewMap(&MapSpec{Name: "other", Type: Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := PinDir(dir, map[string]Pinner{"stats": other}); err != nil {
		t.Fatal(err)
	}
	if got := names(); len(got) != 1 || got[0] != "state/stats" {
		t.Fatalf("after second PinDir: %v (temporary directories left?)", got)
	}
	second, err := LoadPinnedMap(filepath.Join(dir, "stats"))
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	if id, _ := second.ID(); id == firstID || second.Name() != "other" {
		t.Errorf("second PinDir did not replace the pins: %+v", second.Spec())
	}

	// A failure leaves the old pins and no temporary directory.
	if err := PinDir(dir, map[string]Pinner{"bad/name": other}); err == nil {
		t.Error("PinDir with a bad name succeeded")
	}
	if err := PinDir(dir, map[string]Pinner{"a": other, "b": &Map{fd: -1, spec: MapSpec{Name: "closed"}}}); err == nil {
		t.Error("PinDir with a closed map succeeded")
	}
	if got := names(); len(got) != 1 || got[0] != "state/stats" {
		t.Fatalf("after failed PinDir: %v", got)
	}
	if err := PinDir(filepath.Join(t.TempDir(), "x"), objs); !errors.Is(err, ErrNotBPFFS) {
		t.Errorf("PinDir outside bpffs: %v", err)
	}
}
