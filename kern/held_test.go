package kern_test

// Empty pools: client data that finds every pool empty, with CFG_HOLD_FIRST,
// is kept in xlb_held (hold_first) for user space to run through the program
// again; with CFG_SYN_DEMAND, clients' SYNs past the idle legs user space
// counted are reported (syn_demand), for the pools to grow before the data.

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"

	"github.com/xlb-lb/xlb/ebpf"
	"github.com/xlb-lb/xlb/kern"
)

func holdConfig() kern.Config {
	c := defaultConfig
	c.Flags |= kern.ConfigHoldFirst
	return c
}

// held is client key's entry of xlb_held.
func (d *dataPlane) held(k kern.LegKey) (kern.Held, bool) {
	d.t.Helper()
	v := make([]byte, d.objs.Held.ValueSize())
	if err := d.objs.Held.Lookup(keyBytes(d.t, k), v); err != nil {
		return kern.Held{}, false
	}
	var h kern.Held
	if err := h.UnmarshalBinary(v); err != nil {
		d.t.Fatal(err)
	}
	return h, true
}

func (d *dataPlane) heldCount() int {
	d.t.Helper()
	n, key := 0, []byte(nil)
	next := make([]byte, d.objs.Held.KeySize())
	for ; d.objs.Held.NextKey(key, next) == nil; n++ {
		key = bytes.Clone(next)
	}
	return n
}

func TestHeldThenReplayed(t *testing.T) {
	d := loadDataPlane(t)
	d.setConfig(holdConfig())
	c, w := stdClientLeg(), stdWorkerLeg()
	d.putLeg(clientKey, c)

	in := firstDataNoLeg(t, d, c)
	checkEvents(t, d.drainEvents(), kern.Event{Type: kern.EventHeld, Key: clientKey})
	h, ok := d.held(clientKey)
	if !ok {
		t.Fatal("nothing held for the client")
	}
	if !bytes.Equal(h.Frame, in) || h.Seq != c.PeerHi || h.AtNs == 0 {
		t.Fatalf("held %d bytes, seq %#x, at %d; want the %d bytes sent, seq %#x, a time",
			len(h.Frame), h.Seq, h.AtNs, len(in), c.PeerHi)
	}

	// The client sends it again before a leg came: one entry, the last.
	again := fromClient(seg{seq: c.PeerHi, ack: c.SndNxt, flags: tcpACK | tcpPSH, win: 600,
		opts: nopTS(c.PeerTSval+9, c.OurTSval), payload: request}).build()
	d.run(again)
	checkEvents(t, d.drainEvents(), kern.Event{Type: kern.EventHeld, Key: clientKey})
	if h, ok = d.held(clientKey); !ok || !bytes.Equal(h.Frame, again) {
		t.Fatalf("held after a retransmission: present %v, the retransmission %v", ok, bytes.Equal(h.Frame, again))
	}
	if n := d.heldCount(); n != 1 {
		t.Fatalf("%d frames held, want 1", n)
	}

	// A leg is pooled: what user space does with the frame (splice
	// replayHeld) is a run of the program, which binds as for first data.
	d.putLeg(workerKey, w)
	d.pushIdle(workerKey)
	v, out, delta := d.run(h.Frame)
	checkVerdict(t, v, xdpPass)
	checkCounters(t, delta, kern.CounterTCP, kern.CounterBind, kern.CounterFwdToWorker, kern.CounterPass)
	wantToWorker, _ := oracleBind(clientKey, httpClient(c), workerKey, w)
	checkTranslated(t, h.Frame, out, wantToWorker)
}

func TestNotHeld(t *testing.T) {
	c := stdClientLeg()
	big := bytes.Repeat([]byte("x"), 2100) // with its headers, past XLB_HOLD_MAX (2048)
	tests := []struct {
		name    string
		cfg     kern.Config
		s       seg
		verdict uint32
	}{
		{"hold off", defaultConfig, seg{seq: c.PeerHi, flags: tcpACK | tcpPSH, payload: request}, xdpDrop},
		// The client leaves unserved: its FIN is answered (leg_unserved).
		{"with a FIN", holdConfig(), seg{seq: c.PeerHi, flags: tcpACK | tcpPSH | tcpFIN, payload: request}, xdpTX},
		{"not where the data starts", holdConfig(), seg{seq: c.PeerHi + 100, flags: tcpACK | tcpPSH, payload: request}, xdpDrop},
		{"larger than a held frame", holdConfig(), seg{seq: c.PeerHi, flags: tcpACK | tcpPSH, payload: big}, xdpDrop},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := loadDataPlane(t)
			d.setConfig(tc.cfg)
			d.putLeg(clientKey, c)
			tc.s.ack, tc.s.win, tc.s.opts = c.SndNxt, 502, nopTS(c.PeerTSval+7, c.OurTSval)
			v, _, _ := d.run(fromClient(tc.s).build())
			checkVerdict(t, v, tc.verdict)
			evs := d.drainEvents()
			if len(evs) == 0 || evs[0].Type != kern.EventPoolEmpty || evs[0].Key != clientKey {
				t.Errorf("events %v, want pool-empty for the client first", eventSummary(evs))
			}
			if _, ok := d.held(clientKey); ok {
				t.Error("a frame was held")
			}
		})
	}
}

func (d *dataPlane) synBudget() int64 {
	d.t.Helper()
	v := make([]byte, 8)
	if err := d.objs.SynBudget.Lookup(ebpf.Uint32Key(0), v); err != nil {
		d.t.Fatal(err)
	}
	return int64(binary.NativeEndian.Uint64(v))
}

func (d *dataPlane) setSynBudget(n int64) {
	d.t.Helper()
	v := binary.NativeEndian.AppendUint64(nil, uint64(n))
	if err := d.objs.SynBudget.Update(ebpf.Uint32Key(0), v, ebpf.UpdateAny); err != nil {
		d.t.Fatal(err)
	}
}

// TestSynDemand: each new client SYN the program answers takes one from the
// budget; the one that spends it is reported, those after it are not (until
// user space sets the budget again), a retransmitted SYN is not counted
// again, and nothing is counted without CFG_SYN_DEMAND.
func TestSynDemand(t *testing.T) {
	d := loadDataPlane(t)
	cfg := answeringConfig
	cfg.Flags |= kern.ConfigSynDemand
	d.setConfig(cfg)
	d.setSynBudget(1)
	syn := func(port uint16, isn uint32) kern.LegKey {
		t.Helper()
		s := fromClient(seg{seq: isn, flags: tcpSYN, win: 64240, opts: linuxSYN(1460, 1000, 7)})
		s.src = netip.AddrPortFrom(clientAddr.Addr(), uint16(port))
		v, _, _ := d.run(s.build())
		checkVerdict(t, v, xdpTX)
		return kern.LegKey{Peer: s.src, Local: serviceAddr}
	}
	syn(40001, 100)
	checkEvents(t, d.drainEvents()) // within the budget
	k := syn(40002, 200)
	checkEvents(t, d.drainEvents(), kern.Event{Type: kern.EventDemand, Key: k})
	syn(40002, 200) // the same SYN again
	checkEvents(t, d.drainEvents())
	syn(40004, 400)
	checkEvents(t, d.drainEvents()) // told once
	if b := d.synBudget(); b != -2 {
		t.Errorf("budget %d after three clients on a budget of 1, want -2", b)
	}

	cfg.Flags &^= kern.ConfigSynDemand
	d.setConfig(cfg)
	syn(40003, 300)
	checkEvents(t, d.drainEvents())
	if b := d.synBudget(); b != -2 {
		t.Errorf("budget %d after a SYN without CFG_SYN_DEMAND, want -2 still", b)
	}
}

// TestSynDemandFirstBind: a client's first bind gives back the budget its
// SYN took; a later bind of the same client (after an idle release) does
// not.
func TestSynDemandFirstBind(t *testing.T) {
	for _, requests := range []uint32{0, 3} {
		t.Run(fmt.Sprintf("%d requests before", requests), func(t *testing.T) {
			d := loadDataPlane(t)
			cfg := defaultConfig
			cfg.Flags |= kern.ConfigSynDemand
			d.setConfig(cfg)
			d.setSynBudget(-2)
			c := stdClientLeg()
			c.Requests = requests
			d.putLeg(clientKey, c)
			d.putLeg(workerKey, stdWorkerLeg())
			d.pushIdle(workerKey)
			v, _, _ := d.run(fromClient(seg{seq: c.PeerHi, ack: c.SndNxt, flags: tcpACK | tcpPSH, win: 502,
				opts: nopTS(c.PeerTSval+7, c.OurTSval), payload: request}).build())
			checkVerdict(t, v, xdpPass)
			want := int64(-2)
			if requests == 0 {
				want = -1
			}
			if b := d.synBudget(); b != want {
				t.Errorf("budget %d after the bind, want %d", b, want)
			}
		})
	}
}
