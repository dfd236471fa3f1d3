package testnet

import (
	"math/rand/v2"
	"time"
)

// Impairment is what one direction of a TAP link does to the frames it
// carries. The zero value forwards every frame untouched, at once. Every
// decision comes from a generator seeded with Seed, so a run can be replayed:
// the same frames in the same order meet the same fate.
type Impairment struct {
	// Drop, Duplicate and Reorder are probabilities per frame, 0 to 1.
	Drop      float64
	Duplicate float64
	// Reorder holds a frame back and releases it after the next
	// ReorderAfter frames (default 3) have gone through, or after MaxHold
	// (default 20ms) if traffic stops: a sender waiting for that frame
	// would otherwise never send the k frames that release it.
	Reorder      float64
	ReorderAfter int
	MaxHold      time.Duration
	// Delay is added to every frame (a constant delay keeps the order).
	Delay time.Duration
	// Seed of the generator; the same for both directions is fine, they
	// see different frames.
	Seed uint64
}

// Defaults and bounds of an impairment.
const (
	defaultReorderAfter = 3
	defaultMaxHold      = 20 * time.Millisecond
	// maxHeld bounds the frames held for reordering at once; beyond it a
	// frame picked for reordering goes through in order.
	maxHeld = 16
	// maxQueued bounds the frames waiting for their delay; beyond it they
	// are dropped and counted as Overflow.
	maxQueued = 8192
)

// Active reports whether the impairment changes anything.
func (im Impairment) Active() bool {
	return im.Drop > 0 || im.Duplicate > 0 || im.Reorder > 0 || im.Delay > 0
}

// Stats counts what one direction of a link did.
type Stats struct {
	In         uint64 // frames read from the sending end
	Out        uint64 // frames written to the receiving end (duplicates included)
	Dropped    uint64 // dropped on purpose
	Duplicated uint64 // extra copies sent
	Reordered  uint64 // frames held back and released after later ones
	Overflow   uint64 // dropped because the delay queue was full
	WriteErrs  uint64 // frames the receiving end refused
}

// Add returns the sum of two Stats.
func (s Stats) Add(o Stats) Stats {
	return Stats{s.In + o.In, s.Out + o.Out, s.Dropped + o.Dropped, s.Duplicated + o.Duplicated,
		s.Reordered + o.Reordered, s.Overflow + o.Overflow, s.WriteErrs + o.WriteErrs}
}

type heldFrame struct {
	frame []byte
	left  int       // frames still to pass before this one goes
	since time.Time // when it was held
	dup   bool      // send twice when released
}

type timedFrame struct {
	frame []byte
	due   time.Time
}

// impairer applies an Impairment to a stream of frames. It is the pure part
// of a link: no I/O, time given by the caller, so that tests drive it
// deterministically. Not safe for concurrent use.
type impairer struct {
	cfg   Impairment
	rng   *rand.Rand
	held  []heldFrame
	queue []timedFrame // due times never decrease
	stats Stats
}

func newImpairer(cfg Impairment) *impairer {
	if cfg.ReorderAfter <= 0 {
		cfg.ReorderAfter = defaultReorderAfter
	}
	if cfg.MaxHold <= 0 {
		cfg.MaxHold = defaultMaxHold
	}
	return &impairer{cfg: cfg, rng: rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x5851f42d4c957f2d))}
}

// push takes a frame read at now (the impairer keeps it: the caller must not
// reuse it).
func (im *impairer) push(now time.Time, frame []byte) {
	im.stats.In++
	// Always three draws per frame, whatever the outcome, so that one
	// decision never shifts the next frames' fates.
	drop, dup, reorder := im.rng.Float64(), im.rng.Float64(), im.rng.Float64()
	if drop < im.cfg.Drop {
		im.stats.Dropped++
		return
	}
	isDup := dup < im.cfg.Duplicate
	if reorder < im.cfg.Reorder && len(im.held) < maxHeld {
		im.held = append(im.held, heldFrame{frame: frame, left: im.cfg.ReorderAfter, since: now, dup: isDup})
		return
	}
	im.send(now, frame, isDup)
	// This frame went past every held one: count it, release those due.
	kept := im.held[:0]
	var release []heldFrame
	for _, h := range im.held {
		h.left--
		if h.left <= 0 {
			release = append(release, h)
		} else {
			kept = append(kept, h)
		}
	}
	im.held = kept
	for _, h := range release {
		im.stats.Reordered++
		im.send(now, h.frame, h.dup)
	}
}

func (im *impairer) send(now time.Time, frame []byte, dup bool) {
	n := 1
	if dup {
		n = 2
		im.stats.Duplicated++
	}
	for i := 0; i < n; i++ {
		if len(im.queue) >= maxQueued {
			im.stats.Overflow++
			continue
		}
		im.queue = append(im.queue, timedFrame{frame: frame, due: now.Add(im.cfg.Delay)})
	}
}

// due returns the frames to write at now, in order: held frames whose
// MaxHold expired are released first.
func (im *impairer) due(now time.Time) [][]byte {
	if len(im.held) > 0 {
		kept := im.held[:0]
		for _, h := range im.held {
			if now.Sub(h.since) >= im.cfg.MaxHold {
				// Released by time, not overtaken: in order after all
				// if nothing passed it, so not counted as reordered
				// unless something did.
				if h.left < im.cfg.ReorderAfter {
					im.stats.Reordered++
				}
				im.send(now, h.frame, h.dup)
			} else {
				kept = append(kept, h)
			}
		}
		im.held = kept
	}
	var out [][]byte
	i := 0
	for ; i < len(im.queue) && !im.queue[i].due.After(now); i++ {
		out = append(out, im.queue[i].frame)
	}
	if i > 0 {
		im.queue = append(im.queue[:0], im.queue[i:]...)
	}
	im.stats.Out += uint64(len(out))
	return out
}

// next is the earliest time at which due has something to do (ok false:
// nothing pending).
func (im *impairer) next() (t time.Time, ok bool) {
	if len(im.queue) > 0 {
		t, ok = im.queue[0].due, true
	}
	for _, h := range im.held {
		if e := h.since.Add(im.cfg.MaxHold); !ok || e.Before(t) {
			t, ok = e, true
		}
	}
	return t, ok
}

// reconfigure changes the impairment from now on; frames already held or
// queued keep their fate. The generator restarts from the new seed.
func (im *impairer) reconfigure(cfg Impairment) {
	n := newImpairer(cfg)
	im.cfg, im.rng = n.cfg, n.rng
}
