package splice

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"time"

	"github.com/xlb-lb/xlb/ebpf"
	"github.com/xlb-lb/xlb/kern"
	"github.com/xlb-lb/xlb/xdp"
	"golang.org/x/sys/unix"
)

// Handover (--reuse): a new xlb takes over from the running one without
// dropping a connection, as HAProxy's seamless reload does. The new process
// asks on the control socket; the old one pauses (no accepting, no pool
// work, no reaping: the data plane goes on splicing meanwhile), sends a
// description of its state and every socket it holds (listeners, client
// legs, worker legs) as file descriptors (SCM_RIGHTS). The new process
// prepares everything it can fail at (its program loaded against the pinned
// maps, its pools, its event reader) and says it is ready; the old one says
// go; the new one replaces the attached program atomically, the last step,
// and says done; the old one exits without touching the data plane. The
// kernel sees no socket closed and no packet of a leg.
//
// Which process owns the data plane is which program is attached, so the
// swap is the one step that decides, and only one process may take it:
//   - the old process decides alone whether the swap may happen (go, or an
//     abort when the new one is not ready within handoverTimeout); the new
//     one swaps only after a go;
//   - once it said go, the old process resumes only when the new one says
//     it did not swap, or is gone (a dead process swaps no more), and only
//     if its own program, by id, is still the one attached; otherwise it
//     exits, leaving the data plane to whoever holds it.

// fdsPerMessage bounds the descriptors passed in one message (SCM_MAX_FD is 253).
const fdsPerMessage = 200

// handoverVersion is the version of the takeover protocol above. An old
// process that sends none (0) expects the new one to swap as soon as it has
// taken the sockets, and then a single answer.
const handoverVersion = 2

// The steps of a takeover after the descriptors (handoverAck.Step).
const (
	stepReady = "ready" // new -> old: prepared; swapping once told to
	stepGo    = "go"    // old -> new: swap (OK), or give up (not OK)
	stepDone  = "done"  // new -> old: swapped (OK), or did not (not OK)
)

// hookPoint names a point of a takeover where a test may inject a failure
// (handoverHook).
type hookPoint int

const (
	hookBeforeReady hookPoint = iota
	hookBeforeSwap
	hookAfterSwap
)

type handoverWorker struct {
	Addr       string        `json:"addr"`
	ID         uint32        `json:"id"`
	Pushed     uint64        `json:"pushed"`
	IdleDeaths uint64        `json:"idle_deaths"`
	Legs       []kern.LegKey `json:"legs"` // descriptors in this order, after the clients'
	// Dialed legs (--dial xdp) have no descriptor; their ports are
	// held by the placeholders. FreePorts and NextPort are the worker's
	// share of them (the dialer's workerPorts).
	Dialed    []kern.LegKey `json:"dialed,omitempty"`
	FreePorts []uint16      `json:"free_ports,omitempty"`
	NextPort  int           `json:"next_port,omitempty"`
}

type handoverReap struct {
	Key    kern.LegKey `json:"key"`
	InMs   int64       `json:"in_ms"`
	PeerHi uint32      `json:"peer_hi"`
}

// handoverState is what the old process sends before the descriptors.
type handoverState struct {
	Error     string           `json:"error,omitempty"`
	Version   int              `json:"version,omitempty"` // handoverVersion; 0 from an xlb older than it
	Pid       int              `json:"pid"`
	ProgID    uint32           `json:"prog_id,omitempty"` // the program attached to Ifaces, to be replaced
	Listeners []string         `json:"listeners"`         // descriptors first, in this order
	Workers   []handoverWorker `json:"workers"`           // then each worker's legs (clients have no socket)
	Reaps     []handoverReap   `json:"reaps"`
	// The ports of dialed legs (--dial xdp): placeholder sockets,
	// descriptors after the workers' legs, in this order.
	Placeholders []netip.AddrPort `json:"placeholders,omitempty"`
	Ifaces       []string         `json:"ifaces,omitempty"` // the program is attached to these
}

// handoverAck is a step of the takeover after the descriptors (an answer
// without a step is an older xlb's single answer: it swapped, or not).
type handoverAck struct {
	OK    bool   `json:"ok"`
	Step  string `json:"step,omitempty"`
	Error string `json:"error,omitempty"`
}

// giveHandover runs in the old process, on the control connection c.
func (lb *LB) giveHandover(c *net.UnixConn) {
	select {
	case <-lb.done:
		writeMsg(c, handoverState{Error: "this xlb has already handed over"})
		return
	default:
	}
	// One takeover at a time: a second one would pause us again and hand
	// the same sockets to two processes.
	if !lb.handingOver.CompareAndSwap(false, true) {
		writeMsg(c, handoverState{Error: "this xlb is already handing over to another new xlb"})
		return
	}
	defer lb.handingOver.Store(false)
	lb.log.Info("handing over to a new xlb")
	lb.stopLoops()
	state, files, err := lb.handoverSnapshot()
	if err == nil {
		err = writeMsg(c, state)
		if err == nil {
			err = sendFiles(c, files)
		}
	} else {
		writeMsg(c, handoverState{Error: err.Error()})
	}
	for _, f := range files {
		f.Close()
	}
	if err != nil {
		lb.resumeAfterHandover(err)
		return
	}
	swapped, err := lb.handoverSteps(c)
	if err != nil && !swapped {
		lb.resumeAfterHandover(err)
		return
	}
	if err != nil {
		lb.log.Error("the new xlb did not finish the takeover, and may still finish it; not resuming: see `xlb status` and the new xlb's log, and start one with --reuse if none runs", "err", err, "timeout", handoverTimeout())
	}
	lb.letGo()
	lb.log.Info("handed over; exiting")
	close(lb.done)
}

// handoverSteps runs the old process's side of the takeover once the new
// process has the descriptors. It returns true when the new process may have
// swapped the programs (it said so, or went quiet after a go): then we must
// not resume.
func (lb *LB) handoverSteps(c *net.UnixConn) (bool, error) {
	timeout := handoverTimeout()
	c.SetDeadline(time.Now().Add(timeout))
	var ready handoverAck
	if err := readMsg(c, &ready); err != nil {
		// The new process is slow or gone: call it off. It swaps only
		// after a go, and this answer (or the closed connection) is not one.
		writeMsg(c, handoverAck{Step: stepGo, Error: fmt.Sprintf("the running xlb waited %v for the new one to be ready and carries on", timeout)})
		return false, fmt.Errorf("waiting for the new xlb to be ready: %w", err)
	}
	switch {
	case !ready.OK:
		return false, errors.New(ready.Error)
	case ready.Step == "":
		return true, nil // an older xlb: it swapped already, and this says so
	case ready.Step != stepReady:
		writeMsg(c, handoverAck{Step: stepGo, Error: fmt.Sprintf("unexpected step %q", ready.Step)})
		return false, fmt.Errorf("the new xlb sent step %q, want %q", ready.Step, stepReady)
	}
	if err := writeMsg(c, handoverAck{OK: true, Step: stepGo}); err != nil {
		// Not sent whole: the new process reads no go, and gives up.
		return false, fmt.Errorf("telling the new xlb to go: %w", err)
	}
	// From here the new process may swap until it answers.
	c.SetDeadline(time.Now().Add(timeout))
	var done handoverAck
	err := readMsg(c, &done)
	switch {
	case err == nil && done.OK:
		return true, nil
	case err == nil:
		return false, errors.New(done.Error) // it did not swap (it says so)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, unix.ECONNRESET):
		// Gone without an answer: it swaps no more; the program
		// attached tells whether it did.
		return false, fmt.Errorf("the new xlb went away during the takeover: %w", err)
	}
	return true, fmt.Errorf("no answer from the new xlb after it was told to go: %w", err)
}

// resumeAfterHandover carries on after a takeover that failed (err), if our
// program is still the one attached; otherwise another process holds the
// data plane (or none does), and we let go of it all and stop.
func (lb *LB) resumeAfterHandover(err error) {
	if lost := lb.programLost(); lost != nil {
		lb.log.Error("the takeover failed, but our data plane was replaced; not resuming: see `xlb status`, and start an xlb with --reuse if none runs", "err", err, "lost", lost)
		lb.letGo()
		close(lb.done)
		return
	}
	lb.log.Error("handover failed; carrying on", "err", err)
	// The new process may have written its settings into the shared maps
	// while it prepared: ours again.
	if err := lb.writeSettings(); err != nil {
		lb.log.Error("restoring the data plane's settings after a failed handover", "err", err)
	}
	lb.updateSchedule()
	if err := lb.startLoops(); err != nil {
		lb.log.Error("restarting after a failed handover", "err", err)
	}
}

// programLost says on which of our interfaces our program is no longer the
// attached one (nil: on none).
func (lb *LB) programLost() error {
	var errs []error
	for _, ifc := range lb.attached {
		st, err := xdp.Query(ifc)
		switch {
		case err != nil:
			errs = append(errs, err)
		case !st.Attached:
			errs = append(errs, fmt.Errorf("%s: no program attached (ours is id %d)", ifc, lb.progID))
		case st.ProgID != lb.progID:
			errs = append(errs, fmt.Errorf("%s: program id %d attached, ours is id %d", ifc, st.ProgID, lb.progID))
		}
	}
	return errors.Join(errs...)
}

// letGo gives up everything to the process that took over: our descriptors
// are closed (the sockets live on in the new process), the data plane is
// left as it is, and the control socket's path is not removed (the new
// process listens there).
func (lb *LB) letGo() {
	for _, w := range lb.workerList() {
		w.mu.Lock()
		for _, wc := range w.legs {
			wc.close() // our descriptor only: the new process holds its own
		}
		w.legs, w.born = map[kern.LegKey]sock{}, map[kern.LegKey]bornLeg{}
		w.mu.Unlock()
	}
	for _, ln := range lb.listeners {
		ln.Close()
	}
	if lb.dialer != nil {
		lb.dialer.close() // the placeholders live on in the new process
	}
	lb.control.SetUnlinkOnClose(false)
	lb.control.Close()
	lb.closeAnnounce() // the new process holds a queue of its own
	lb.attached, lb.pinned = nil, false
	lb.closeObjects()
}

// handoverSnapshot describes the paused load balancer and duplicates the
// descriptors of its sockets, in the order of the description.
func (lb *LB) handoverSnapshot() (handoverState, []*os.File, error) {
	st := handoverState{Version: handoverVersion, Pid: os.Getpid(), ProgID: lb.progID, Ifaces: lb.attached}
	var files []*os.File
	fail := func(err error) (handoverState, []*os.File, error) {
		for _, f := range files {
			f.Close()
		}
		return handoverState{}, nil, err
	}
	for _, ln := range lb.listeners {
		f, err := ln.File()
		if err != nil {
			return fail(err)
		}
		files = append(files, f)
		st.Listeners = append(st.Listeners, ln.Addr().String())
	}
	lb.mu.Lock()
	now := time.Now()
	lb.reapQueue.each(func(r reapItem) {
		st.Reaps = append(st.Reaps, handoverReap{Key: r.key, InMs: r.at.Sub(now).Milliseconds(), PeerHi: r.peerHi})
	})
	lb.mu.Unlock()
	for _, w := range lb.workerList() {
		w.mu.Lock()
		hw := handoverWorker{Addr: w.spec.Addr.String(), ID: w.id}
		if lb.dialer != nil {
			hw.FreePorts, hw.NextPort = lb.dialer.portsOf(w.spec.Addr)
		}
		for k, c := range w.legs {
			if c == dialedSock {
				hw.Dialed = append(hw.Dialed, k)
				continue
			}
			fd, err := unix.Dup(int(c))
			if err != nil {
				w.mu.Unlock()
				return fail(fmt.Errorf("duplicating a worker connection's descriptor: %w", err))
			}
			files = append(files, os.NewFile(uintptr(fd), "leg"))
			hw.Legs = append(hw.Legs, k)
		}
		w.mu.Unlock()
		st.Workers = append(st.Workers, hw)
	}
	if lb.dialer != nil {
		for _, h := range lb.dialer.placeholders() {
			fd, err := unix.Dup(h.fd)
			if err != nil {
				return fail(fmt.Errorf("duplicating a placeholder's descriptor: %w", err))
			}
			files = append(files, os.NewFile(uintptr(fd), "placeholder"))
			st.Placeholders = append(st.Placeholders, h.addr)
		}
	}
	return st, files, nil
}

func sendFiles(c *net.UnixConn, files []*os.File) error {
	for i := 0; i < len(files); i += fdsPerMessage {
		batch := files[i:min(i+fdsPerMessage, len(files))]
		fds := make([]int, len(batch))
		for j, f := range batch {
			fds[j] = int(f.Fd())
		}
		if _, _, err := c.WriteMsgUnix([]byte{byte(len(batch))}, unix.UnixRights(fds...), nil); err != nil {
			return fmt.Errorf("passing descriptors: %w", err)
		}
	}
	return nil
}

func recvFiles(c *net.UnixConn, n int) ([]*os.File, error) {
	var files []*os.File
	buf := make([]byte, 1)
	oob := make([]byte, unix.CmsgSpace(4*fdsPerMessage))
	for len(files) < n {
		_, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
		if err != nil {
			return files, fmt.Errorf("receiving descriptors: %w", err)
		}
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			return files, err
		}
		got := 0
		for _, m := range msgs {
			fds, err := unix.ParseUnixRights(&m)
			if err != nil {
				return files, err
			}
			for _, fd := range fds {
				files = append(files, os.NewFile(uintptr(fd), "handover"))
				got++
			}
		}
		if got == 0 {
			return files, errors.New("receiving descriptors: a message without any")
		}
	}
	return files, nil
}

// takeOver runs in the new process: it takes the sockets of the running xlb,
// prepares its data plane against the pinned maps and, once the old process
// says go, replaces the attached program. ErrNoInstance means nobody was
// there.
func (lb *LB) takeOver() error {
	cfg := lb.cfg
	c, err := Dial(lb.socketPath())
	if err != nil {
		return err
	}
	defer c.Close()
	if err := writeMsg(c, Request{Cmd: "handover"}); err != nil {
		return fmt.Errorf("handover: %w", err)
	}
	var st handoverState
	if err := readMsg(c, &st); err != nil {
		return fmt.Errorf("handover: %w", err)
	}
	if st.Error != "" {
		return fmt.Errorf("handover refused: %s", st.Error)
	}
	n := len(st.Listeners) + len(st.Placeholders)
	for _, w := range st.Workers {
		n += len(w.Legs)
	}
	files, err := recvFiles(c, n)
	defer func() {
		for _, f := range files {
			f.Close() // net.FileConn/FileListener made their own copies
		}
	}()
	// Until the swap, a failure of ours is the old process's to recover
	// from: it is told, and resumes. Our teardown (Start's) then finds
	// nothing attached or pinned of ours, and leaves the data plane alone.
	fail := func(err error) error {
		writeMsg(c, handoverAck{Step: stepReady, Error: err.Error()})
		return fmt.Errorf("handover: %w", err)
	}
	if err != nil {
		return fail(err)
	}
	if err := lb.adoptState(st, files); err != nil {
		return fail(err)
	}
	if err := handoverHook(hookBeforeReady, c); err != nil {
		return fail(err)
	}
	if st.Version >= handoverVersion {
		// The old process decides whether we may swap: it may have
		// given up waiting for us.
		c.SetDeadline(time.Now().Add(controlTimeout))
		var goAhead handoverAck
		err := writeMsg(c, handoverAck{OK: true, Step: stepReady})
		if err == nil {
			err = readMsg(c, &goAhead)
		}
		if err != nil {
			return fmt.Errorf("handover: the running xlb did not say go, and carries on (it waits %v for a new xlb to be ready): %w", controlTimeout, err)
		}
		if !goAhead.OK {
			return fmt.Errorf("handover called off by the running xlb: %s", goAhead.Error)
		}
	}
	done := handoverAck{Step: stepDone}
	if st.Version < handoverVersion {
		done.Step = "" // an older xlb reads one answer, without steps
	}
	err = handoverHook(hookBeforeSwap, c)
	if err == nil {
		err = lb.replacePrograms(st.Ifaces, st.ProgID, lb.dp.Objs.Program.FD())
	}
	if err != nil {
		done.Error = err.Error()
		writeMsg(c, done)
		return fmt.Errorf("handover: %w", err)
	}
	handoverHook(hookAfterSwap, c)
	// The data plane is ours. What is left cannot undo that: a failure
	// from here is logged, and we carry on.
	done.OK = true
	if err := writeMsg(c, done); err != nil {
		lb.log.Warn("telling the old xlb the takeover is done (it finds out from the attached program)", "err", err)
	}
	lb.finishTakeover()
	clients := 0
	lb.dp.ForEachLeg(func(_ kern.LegKey, l *kern.Leg) bool {
		if l.Kind == kern.LegClient && l.State != kern.LegDead {
			clients++
		}
		return true
	})
	lb.log.Info("took over", "from_pid", st.Pid, "clients", clients, "iface", cfg.Iface)
	return nil
}

// adoptState builds the load balancer from the old one's state and sockets,
// and prepares its data plane, all but the program swap. What it writes into
// the shared maps (settings, workers, schedule) the old process writes back
// if the takeover fails.
func (lb *LB) adoptState(st handoverState, files []*os.File) error {
	cfg := lb.cfg
	next := 0
	take := func() *os.File { f := files[next]; next++; return f }
	for range st.Listeners {
		l, err := net.FileListener(take())
		if err != nil {
			return err
		}
		lb.listeners = append(lb.listeners, l.(*net.TCPListener))
	}
	// Workers: those of the old process keep their ids and pool accounting;
	// workers new on our command line get fresh ids.
	old := map[string]handoverWorker{}
	var nextID uint32
	for _, hw := range st.Workers {
		old[hw.Addr] = hw
		nextID = max(nextID, hw.ID+1)
	}
	adopted := map[string]bool{}
	for _, ws := range cfg.Workers {
		w := &worker{lb: lb, spec: ws, legs: map[kern.LegKey]sock{}, born: map[kern.LegKey]bornLeg{}, kick: make(chan struct{}, 1)}
		if hw, ok := old[ws.Addr.String()]; ok {
			w.id = hw.ID
			adopted[hw.Addr] = true
		} else {
			w.id = nextID
			nextID++
		}
		lb.addWorker(w)
	}
	for _, hw := range st.Workers {
		w := lb.workerByID(hw.ID)
		if !adopted[hw.Addr] {
			// Not on our command line any more: removed like `xlb ctl
			// remove` does (drained: no new request, its legs retired as
			// they come idle, then forgotten).
			spec := WorkerSpec{Weight: 0}
			if ap, err := netip.ParseAddrPort(hw.Addr); err == nil {
				spec.Addr = ap
			}
			w = &worker{lb: lb, spec: spec, id: hw.ID,
				legs: map[kern.LegKey]sock{}, born: map[kern.LegKey]bornLeg{}, kick: make(chan struct{}, 1), draining: true, removing: true,
				drainSince: time.Now()}
			lb.addWorker(w)
		}
		for _, k := range hw.Legs {
			fd, err := unix.Dup(int(take().Fd()))
			if err != nil {
				return fmt.Errorf("taking a worker connection's descriptor: %w", err)
			}
			w.legs[k] = sock(fd)
		}
		for _, k := range hw.Dialed {
			w.legs[k] = dialedSock
		}
		if len(w.legs) > 0 {
			// Its connections are established: it is up. Else it showed
			// "starting" (xlb_worker_up 0) until its pool next dialed,
			// which a full pool of kept connections may not do for long
			// (make soak: 30 s and more).
			w.state = WorkerUp
		}
	}
	if len(st.Placeholders) > 0 {
		// Dialed legs' ports: ours to hold now, with or without --dial
		// xdp (without it, only until their connections end).
		if lb.dialer == nil {
			d, err := newDialer()
			if err != nil {
				return err
			}
			lb.dialer = d
		}
		var hs []placeholder
		for _, a := range st.Placeholders {
			fd, err := unix.Dup(int(take().Fd()))
			if err != nil {
				return fmt.Errorf("taking a placeholder's descriptor: %w", err)
			}
			hs = append(hs, placeholder{fd: fd, addr: a})
		}
		lb.dialer.adopt(hs)
		for _, hw := range st.Workers {
			if ap, err := netip.ParseAddrPort(hw.Addr); err == nil {
				lb.dialer.adoptPorts(ap, hw.FreePorts, hw.NextPort, hw.Dialed)
			}
		}
	}
	now := time.Now()
	// Oldest first, as they were handed over; sorted all the same (the
	// queue is a FIFO, and the file is another process's).
	slices.SortStableFunc(st.Reaps, func(a, b handoverReap) int { return cmp.Compare(a.InMs, b.InMs) })
	for _, r := range st.Reaps {
		lb.reapQueue.push(reapItem{key: r.Key, at: now.Add(time.Duration(r.InMs) * time.Millisecond), peerHi: r.PeerHi})
	}

	// The data plane: our program against the pinned maps.
	maps, err := kern.OpenPinnedMaps(PinDir(cfg.Iface))
	if err != nil {
		return fmt.Errorf("%w (is the running xlb older than this one?)", err)
	}
	lb.reused = maps
	objs, err := kern.LoadWith(kern.LoadOptions{ReuseMaps: maps, MaxLegs: maps[kern.LegsMapName].MaxEntries()})
	if err != nil {
		return err
	}
	if err := lb.useObjects(objs); err != nil {
		return err
	}
	if err := lb.writeSettings(); err != nil {
		return err
	}
	if err := lb.setupPools(); err != nil {
		return err
	}
	// The event reader now: it can fail, and after the swap nothing may.
	lb.events, err = ebpf.NewRingBufReader(objs.Events)
	return err
}

// writeSettings writes what of the data plane's settings a takeover
// changes: those of our command line, and our workers (the schedule is
// updateSchedule's).
func (lb *LB) writeSettings() error {
	kc, err := lb.dp.Config()
	if err != nil {
		return err
	}
	kc.Flags = kc.Flags&^(kern.ConfigRouted|kern.ConfigAnswerSyn) | lb.cfg.flags()
	kc.Policy = lb.cfg.Policy.code()
	kc.Protocol = lb.cfg.Protocol
	kc.LogEvery = lb.cfg.LogEvery
	if err := lb.dp.SetConfig(kc); err != nil {
		return err
	}
	for _, w := range lb.workerList() {
		if err := lb.dp.SetWorker(w.spec.Addr, kern.WorkerInfo{ID: w.id}); err != nil {
			return err
		}
	}
	return nil
}

// finishTakeover makes the pins ours and starts serving, once the data
// plane is. Neither can undo the takeover: a failure is logged, and says
// what it costs.
func (lb *LB) finishTakeover() {
	if err := lb.dp.Objs.Pin(PinDir(lb.cfg.Iface)); err != nil {
		// The old pins stay: the maps are the same, so that a later
		// --reuse still finds them.
		lb.log.Error("pinning our program (the pinned maps are unchanged)", "err", err)
	} else {
		lb.pinned = true
	}
	// The old process no longer answers on the control socket (it stopped
	// at the swap), and does not remove the path: ours replaces it.
	path := lb.socketPath()
	os.Remove(path)
	if ln, err := listenControlAt(path); err != nil {
		lb.log.Error("no control socket: xlb ctl, stats and a later --reuse cannot reach this xlb; stop it (SIGTERM) and start it again", "err", err)
	} else {
		lb.control = ln
		go lb.serveControl(ln)
	}
	lb.runLoops()
}

// replacePrograms puts our program (progFD) on every interface of the
// command line in place of the old process's (oldID; 0 from an older xlb:
// whatever xlb program is attached), atomically where one is attached, in
// the first interface's mode where none is (an interface added to the
// list); then it removes the old program from the interfaces no longer
// listed (old, as the old process reported them; empty from an xlb of one
// interface). If an interface fails, those done before get the old program
// back: it is all or nothing.
func (lb *LB) replacePrograms(old []string, oldID uint32, progFD int) error {
	cfg := lb.cfg
	cur, err := xdp.Query(cfg.Iface)
	if err != nil {
		return err
	}
	if !cur.Attached {
		return fmt.Errorf("no data plane is attached to %s any more", cfg.Iface)
	}
	mode := cur.Mode
	type swapped struct {
		ifc     string
		oldProg *ebpf.Program // nil: nothing was attached
	}
	var done []swapped
	undo := func() {
		for _, s := range done {
			var err error
			if s.oldProg != nil {
				_, err = xdp.Attach(s.ifc, s.oldProg.FD(), xdp.AttachOptions{ReplaceFD: progFD})
			} else {
				err = xdp.Detach(s.ifc, lb.progID)
			}
			if err != nil {
				lb.log.Error("putting the old program back after a failed takeover", "iface", s.ifc, "err", err)
			}
		}
	}
	defer func() {
		for _, s := range done {
			if s.oldProg != nil {
				s.oldProg.Close()
			}
		}
	}()
	for _, ifc := range cfg.ifaces() {
		if cur, err = xdp.Query(ifc); err != nil {
			undo()
			return err
		}
		opts := xdp.AttachOptions{Mode: mode}
		var oldProg *ebpf.Program
		if cur.Attached {
			id := oldID
			if id == 0 {
				id = cur.ProgID
			}
			if oldProg, err = oldProgram(id); err != nil {
				undo()
				return fmt.Errorf("%s: %w", ifc, err)
			}
			opts.Mode = cur.Mode
			opts.ReplaceFD = oldProg.FD()
		}
		if _, err := xdp.Attach(ifc, progFD, opts); err != nil {
			if oldProg != nil {
				oldProg.Close()
			}
			undo()
			return fmt.Errorf("replacing the attached program on %s: %w", ifc, err)
		}
		done = append(done, swapped{ifc, oldProg})
	}
	for _, s := range done {
		lb.attached = append(lb.attached, s.ifc)
	}
	for _, ifc := range old {
		if slices.Contains(cfg.ifaces(), ifc) {
			continue
		}
		if cur, err := xdp.Query(ifc); err == nil && cur.Attached {
			id := oldID
			if id == 0 {
				p, err := oldProgram(cur.ProgID)
				if err != nil {
					continue // not an xlb's
				}
				p.Close()
				id = cur.ProgID
			}
			if err := xdp.Detach(ifc, id); err != nil {
				lb.log.Warn("removing the old program from an interface no longer listed", "iface", ifc, "err", err)
			}
		}
	}
	return nil
}

// oldProgram opens the old process's program, which must be an xlb's.
func oldProgram(id uint32) (*ebpf.Program, error) {
	p, stats, err := kern.Attached(id)
	if err != nil {
		return nil, err
	}
	stats.Close()
	return p, nil
}
