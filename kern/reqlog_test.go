package kern_test

import (
	"testing"

	"github.com/xlb-lb/xlb/kern"
)

// TestRequestRecords: with log_every 1, the boundary that moves the client
// writes the record of the request W1 answered (bytes each way, its number,
// the times noted on W1) and starts one on W2; W2's answer, sent to
// xlb_slow for it, notes its first and last bytes; a reset ends the pair
// and writes W2's record. With log_every 0 nothing is started or written.
func TestRequestRecords(t *testing.T) {
	d := loadDataPlane(t)
	c := defaultConfig
	c.LogEvery = 1
	d.setConfig(c)
	a := answeredPair()
	a.w1.ReqNs, a.w1.FirstUs, a.w1.LastUs = 1000, 5, 9
	a.w1.ReqTx = a.w1.SentHi - 50
	a.store(d, true)

	// 1. The boundary: W1's request is done.
	v, _, _ := d.run(a.next().build())
	checkVerdict(t, v, xdpPass)
	recs := d.drainRecords()
	if len(recs) != 1 {
		t.Fatalf("%d records at the boundary, want 1: %+v", len(recs), recs)
	}
	r := recs[0]
	want := kern.ReqRecord{Client: clientKey, WLeg: workerKey, Worker: 1, End: kern.ReqEndNext, Request: 1,
		ReqBytes: 50, RespBytes: a.w1.PeerHi - a.w1.ReqMark, StartNs: 1000, EndNs: r.EndNs, FirstUs: 5, LastUs: 9}
	if r != want || r.EndNs <= 1000 {
		t.Errorf("record:\n got  %+v\n want %+v (end after the start)", r, want)
	}
	if w1 := d.mustLeg(workerKey); w1.ReqNs != 0 {
		t.Errorf("W1 still has a logged request (req_ns %d) after its record", w1.ReqNs)
	}
	w2 := d.mustLeg(worker2Key)
	if w2.ReqNs == 0 || w2.ReqTx != a.w2.SndNxt || w2.FirstUs != 0 || w2.LastUs != 0 {
		t.Errorf("W2's request not started as logged: req_ns %d req_tx %#x (want %#x) first %d last %d",
			w2.ReqNs, w2.ReqTx, a.w2.SndNxt, w2.FirstUs, w2.LastUs)
	}

	// 2. W2 answers in two segments: the first byte's time, then the last's.
	cm := a.materializedClient()
	wantC := a.clientAfterRemix(cm)
	toW2, _ := oracleBind(clientKey, cm, worker2Key, a.w2)
	hi := a.w2.PeerHi
	for i := 0; i < 2; i++ {
		in := on(worker2Key, seg{seq: hi, ack: wantC.PeerHi + toW2.SeqOff, flags: tcpACK | tcpPSH, win: 100,
			opts: nopTS(a.w2.PeerTSval+7+uint32(i), a.w2.OurTSval+2), payload: answer(100)})
		v, _, _ = d.run(in)
		checkVerdict(t, v, xdpPass)
		hi += 100
	}
	w2 = d.mustLeg(worker2Key)
	if w2.FirstUs == 0 || w2.LastUs < w2.FirstUs {
		t.Errorf("W2's answer times: first %d last %d (microseconds after the start, plus 1)", w2.FirstUs, w2.LastUs)
	}
	if recs := d.drainRecords(); len(recs) != 0 {
		t.Errorf("records while the answer goes: %+v", recs)
	}

	// 3. The client resets at its next byte: the pair ends, W2's record goes.
	v, _, _ = d.run(fromClient(seg{seq: wantC.PeerHi, flags: tcpRST}).build())
	checkVerdict(t, v, xdpPass)
	recs = d.drainRecords()
	if len(recs) != 1 {
		t.Fatalf("%d records at the reset, want 1: %+v", len(recs), recs)
	}
	r = recs[0]
	if r.Client != clientKey || r.WLeg != worker2Key || r.Worker != 2 || r.End != kern.ReqEndReset || r.Request != 2 ||
		r.ReqBytes != uint32(len(request2)) || r.RespBytes != 200 || r.StartNs != w2.ReqNs || r.FirstUs != w2.FirstUs || r.LastUs != w2.LastUs {
		t.Errorf("record of the reset pair: %+v (W2 %+v)", r, w2)
	}

	// Off: nothing started, nothing written, though a stale req_ns would say
	// otherwise (log_end writes what a start began: none here).
	d = loadDataPlane(t)
	a = answeredPair()
	a.store(d, true)
	v, _, _ = d.run(a.next().build())
	checkVerdict(t, v, xdpPass)
	if recs := d.drainRecords(); len(recs) != 0 {
		t.Errorf("records with log_every 0: %+v", recs)
	}
	if w2 := d.mustLeg(worker2Key); w2.ReqNs != 0 {
		t.Errorf("W2's request logged with log_every 0 (req_ns %d)", w2.ReqNs)
	}
}
