package splice

import "github.com/xlb-lb/xlb/kern"

// Bind computes the binding pair between client leg c and worker leg w from
// their positions, exactly as bind_legs() in kern/bpf/leg.h does: bytes the
// client sends next (from c.PeerHi) land right after what w's worker has
// received (w.SndNxt); acks map c.SndNxt onto w.PeerHi; timestamps continue
// where each peer last saw them. It is the oracle of the packet tests and what
// user space uses when it binds legs itself.
func Bind(ck kern.LegKey, c *kern.Leg, wk kern.LegKey, w *kern.Leg) (toWorker, toClient kern.Binding) {
	toWorker = kern.Binding{
		To:        wk,
		SeqOff:    w.SndNxt - c.PeerHi,
		AckOff:    w.PeerHi - c.SndNxt,
		TSvalOff:  w.OurTSval - c.PeerTSval,
		TSecrOff:  w.PeerTSval - c.OurTSval,
		InWScale:  c.PeerWScale,
		OutWScale: w.OurWScale,
		Proto:     c.Proto,
		Worker:    w.Worker,
	}
	toClient = kern.Binding{
		To:        ck,
		SeqOff:    -toWorker.AckOff,
		AckOff:    -toWorker.SeqOff,
		TSvalOff:  -toWorker.TSecrOff,
		TSecrOff:  -toWorker.TSvalOff,
		InWScale:  w.PeerWScale,
		OutWScale: c.OurWScale,
		Flags:     kern.BindToClient,
		Proto:     c.Proto,
		Worker:    w.Worker,
	}
	return toWorker, toClient
}

// Segment is the part of a TCP segment that translation changes.
type Segment struct {
	Seq, Ack     uint32
	Window       uint16
	TSval, TSecr uint32
	HasTS        bool
	SACK         [][2]uint32
}

// Translate maps a segment arriving on one leg through binding b, as the
// data plane does.
func Translate(s Segment, b *kern.Binding) Segment {
	out := s
	out.Seq = s.Seq + b.SeqOff
	out.Ack = s.Ack + b.AckOff
	out.Window = ScaleWindow(s.Window, b.InWScale, b.OutWScale)
	if s.HasTS {
		out.TSval = s.TSval + b.TSvalOff
		out.TSecr = s.TSecr + b.TSecrOff
	}
	out.SACK = make([][2]uint32, len(s.SACK))
	for i, e := range s.SACK {
		out.SACK[i] = [2]uint32{e[0] + b.AckOff, e[1] + b.AckOff}
	}
	return out
}

// ScaleWindow rescales a window field from the sender's scale to the
// receiver's, clamped to 16 bits; an open window never becomes zero.
func ScaleWindow(win uint16, in, out uint8) uint16 {
	w := (uint64(win) << in) >> out
	switch {
	case w > 0xffff:
		return 0xffff
	case w == 0 && win != 0:
		return 1
	}
	return uint16(w)
}
