package testnet

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestTAPPing: a clean TAP link carries ping both ways, the pcap records
// it, and closing the link removes both devices.
func TestTAPPing(t *testing.T) {
	RequireRoot(t)
	a, b := New(t), New(t)
	pcap := filepath.Join(t.TempDir(), "link.pcap")
	l := TAP(t, a, "ta", "10.9.0.1/24", b, "tb", "10.9.0.2/24", TAPConfig{Pcap: pcap})
	for i := 0; i < 3; i++ {
		if err := ping(a, "10.9.0.2"); err != nil {
			t.Fatal(err)
		}
	}
	ab, ba := l.Stats()
	// ARP request + 3 echo requests one way, ARP reply + 3 replies the other.
	if ab.Out < 4 || ba.Out < 4 || ab.Dropped+ba.Dropped != 0 {
		t.Errorf("stats a->b %+v, b->a %+v: want at least 4 frames each way, none dropped", ab, ba)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	for _, ns := range []*NS{a, b} {
		if out := ns.Run("ip", "-o", "link"); strings.Contains(out, ": ta") || strings.Contains(out, ": tb") {
			t.Errorf("TAP device left in %s after Close:\n%s", ns.Name, out)
		}
	}
	data, err := os.ReadFile(pcap)
	if err != nil {
		t.Fatal(err)
	}
	records, icmp := 0, 0
	for r := data[24:]; len(r) >= 16; records++ {
		n := int(binary.LittleEndian.Uint32(r[8:]))
		if len(r) < 16+n {
			t.Fatalf("truncated pcap record %d", records)
		}
		f := r[16 : 16+n]
		if n >= 34 && f[12] == 0x08 && f[13] == 0 && f[23] == 1 {
			icmp++
		}
		r = r[16+n:]
	}
	if uint64(records) != ab.Out+ba.Out || icmp < 6 {
		t.Errorf("pcap has %d records (%d ICMP), link delivered %d frames", records, icmp, ab.Out+ba.Out)
	}
}

// TestTAPImpairedTCP: 4 MB each way over TCP through 2% loss, 1%
// duplication and 5% reordering in both directions arrive intact, and the
// link counted each kind of impairment.
func TestTAPImpairedTCP(t *testing.T) {
	RequireRoot(t)
	a, b := New(t), New(t)
	imp := func(seed uint64) Impairment {
		return Impairment{Drop: 0.02, Duplicate: 0.01, Reorder: 0.05, Delay: time.Millisecond, Seed: seed}
	}
	l := TAP(t, a, "ta", "10.9.0.1/24", b, "tb", "10.9.0.2/24", TAPConfig{AtoB: imp(1), BtoA: imp(2)})

	const size = 4 << 20
	payload := make([]byte, size)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range payload {
		payload[i] = byte(rng.Uint32())
	}
	want := sha256.Sum256(payload)

	var ln net.Listener
	if err := b.Do(func() (err error) { ln, err = net.Listen("tcp4", "10.9.0.2:7000"); return }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// The server echoes what it reads.
	srvErr := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			srvErr <- err
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(60 * time.Second))
		_, err = io.CopyN(c, c, size)
		srvErr <- err
	}()
	var c net.Conn
	if err := a.Do(func() (err error) { c, err = net.DialTimeout("tcp4", "10.9.0.2:7000", 10*time.Second); return }); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	go c.Write(payload)
	got := make([]byte, size)
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("reading the echo: %v", err)
	}
	if err := <-srvErr; err != nil {
		t.Fatalf("echo server: %v", err)
	}
	if sha256.Sum256(got) != want || !bytes.Equal(got, payload) {
		t.Fatal("echoed data differs")
	}
	ab, ba := l.Stats()
	t.Logf("a->b %+v", ab)
	t.Logf("b->a %+v", ba)
	for _, s := range []Stats{ab, ba} {
		if s.Dropped == 0 || s.Duplicated == 0 || s.Reordered == 0 {
			t.Errorf("impairment not applied: %+v", s)
		}
		if s.WriteErrs != 0 || s.Overflow != 0 {
			t.Errorf("link lost frames of its own: %+v", s)
		}
	}
}
