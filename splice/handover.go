package splice

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"time"

	"github.com/xlb-lb/xlb/kern"
	"github.com/xlb-lb/xlb/xdp"
	"golang.org/x/sys/unix"
)

// Handover (--reuse): a new xlb takes over from the running one without
// dropping a connection, as HAProxy's seamless reload does. The new process
// asks on the control socket; the old one pauses (no accepting, no pool
// work, no reaping: the data plane goes on splicing meanwhile), sends a
// description of its state and every socket it holds (listeners, client
// legs, worker legs) as file descriptors (SCM_RIGHTS), and once the new
// process has them all, exits without touching the data plane. The new
// process loads its own program against the pinned maps, replaces the
// attached program atomically, and carries on. The kernel sees no socket
// closed and no packet of a leg.

// fdsPerMessage bounds the descriptors passed in one message (SCM_MAX_FD is 253).
const fdsPerMessage = 200

type handoverWorker struct {
	Addr       string        `json:"addr"`
	ID         uint32        `json:"id"`
	Pushed     uint64        `json:"pushed"`
	IdleDeaths uint64        `json:"idle_deaths"`
	Legs       []kern.LegKey `json:"legs"` // descriptors in this order, after the clients'
}

type handoverReap struct {
	Key    kern.LegKey `json:"key"`
	InMs   int64       `json:"in_ms"`
	PeerHi uint32      `json:"peer_hi"`
}

// handoverState is what the old process sends before the descriptors.
type handoverState struct {
	Error     string           `json:"error,omitempty"`
	Pid       int              `json:"pid"`
	Listeners []string         `json:"listeners"` // descriptors first, in this order
	Workers   []handoverWorker `json:"workers"`   // then each worker's legs (clients have no socket)
	Reaps     []handoverReap   `json:"reaps"`
	Ifaces    []string         `json:"ifaces,omitempty"` // the program is attached to these
}

type handoverAck struct {
	OK    bool   `json:"ok"`
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
	var ack handoverAck
	if err == nil {
		c.SetDeadline(time.Now().Add(controlTimeout))
		err = readMsg(c, &ack)
		if err == nil && !ack.OK {
			err = errors.New(ack.Error)
		}
	}
	if err != nil {
		lb.log.Error("handover failed; carrying on", "err", err)
		if err := lb.startLoops(); err != nil {
			lb.log.Error("restarting after a failed handover", "err", err)
		}
		return
	}
	// The new process holds every socket now. Close our descriptors (the
	// sockets live on in the new process) and leave the data plane as is.
	for _, w := range lb.workerList() {
		w.mu.Lock()
		for _, wc := range w.legs {
			wc.close() // our descriptor only: the new process holds its own
		}
		w.legs = map[kern.LegKey]sock{}
		w.mu.Unlock()
	}
	for _, ln := range lb.listeners {
		ln.Close()
	}
	lb.control.SetUnlinkOnClose(false) // the new process listens on that path now
	lb.control.Close()
	lb.attached, lb.pinned = nil, false
	lb.closeObjects()
	lb.log.Info("handed over; exiting")
	close(lb.done)
}

// handoverSnapshot describes the paused load balancer and duplicates the
// descriptors of its sockets, in the order of the description.
func (lb *LB) handoverSnapshot() (handoverState, []*os.File, error) {
	st := handoverState{Pid: os.Getpid(), Ifaces: lb.attached}
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
	for _, r := range lb.reapQueue {
		st.Reaps = append(st.Reaps, handoverReap{Key: r.key, InMs: r.at.Sub(now).Milliseconds(), PeerHi: r.peerHi})
	}
	lb.mu.Unlock()
	for _, w := range lb.workerList() {
		w.mu.Lock()
		hw := handoverWorker{Addr: w.spec.Addr.String(), ID: w.id}
		for k, c := range w.legs {
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
// loads its data plane against the pinned maps and replaces the attached
// program. ErrNoInstance means nobody was there.
func (lb *LB) takeOver() (err error) {
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
	n := len(st.Listeners)
	for _, w := range st.Workers {
		n += len(w.Legs)
	}
	files, err := recvFiles(c, n)
	defer func() {
		for _, f := range files {
			f.Close() // net.FileConn/FileListener made their own copies
		}
		ack := handoverAck{OK: err == nil}
		if err != nil {
			ack.Error = err.Error()
		}
		writeMsg(c, ack)
	}()
	if err != nil {
		return fmt.Errorf("handover: %w", err)
	}
	if err := lb.adoptState(st, files); err != nil {
		return fmt.Errorf("handover: %w", err)
	}
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

// adoptState builds the load balancer from the old one's state and sockets.
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
		w := &worker{lb: lb, spec: ws, legs: map[kern.LegKey]sock{}, kick: make(chan struct{}, 1)}
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
				legs: map[kern.LegKey]sock{}, kick: make(chan struct{}, 1), draining: true, removing: true,
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
	}
	now := time.Now()
	for _, r := range st.Reaps {
		lb.reapQueue = append(lb.reapQueue, reapItem{key: r.Key, at: now.Add(time.Duration(r.InMs) * time.Millisecond), peerHi: r.PeerHi})
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
	lb.dp = &DataPlane{Objs: objs}
	lb.lingerMax = int(objs.Legs.MaxEntries() / 4)
	kc, err := lb.dp.Config()
	if err != nil {
		return err
	}
	kc.Flags = kc.Flags&^(kern.ConfigRouted|kern.ConfigAnswerSyn) | cfg.flags()
	kc.Policy = cfg.Policy.code()
	kc.Protocol = cfg.Protocol
	if err := lb.dp.SetConfig(kc); err != nil {
		return err
	}
	for _, w := range lb.workerList() {
		info := kern.WorkerInfo{ID: w.id}
		if err := lb.dp.SetWorker(w.spec.Addr, info); err != nil {
			return err
		}
	}
	if err := lb.setupPools(); err != nil {
		return err
	}
	if err := lb.replacePrograms(st.Ifaces, objs.Program.FD()); err != nil {
		return err
	}
	if err := objs.Pin(PinDir(cfg.Iface)); err != nil {
		return err
	}
	lb.pinned = true
	// The old process listens on the control socket until it has our ack;
	// ours replaces it (listenControl removes a path nobody answers on, and
	// the old one does not unlink it).
	lb.control = nil
	return lb.startLoopsAfterHandover()
}

// replacePrograms puts our program on every interface of the command line
// in place of the old process's (atomically where one is attached, in the
// first interface's mode where none is: an interface added to the list),
// and removes the old program from the interfaces no longer listed (old, as
// the old process reported them; empty from an xlb of one interface).
func (lb *LB) replacePrograms(old []string, progFD int) error {
	cfg := lb.cfg
	cur, err := xdp.Query(cfg.Iface)
	if err != nil {
		return err
	}
	if !cur.Attached {
		return fmt.Errorf("no data plane is attached to %s any more", cfg.Iface)
	}
	mode := cur.Mode
	for _, ifc := range cfg.ifaces() {
		if cur, err = xdp.Query(ifc); err != nil {
			return err
		}
		opts := xdp.AttachOptions{Mode: mode}
		if cur.Attached {
			oldProg, stats, err := kern.Attached(cur.ProgID)
			if err != nil {
				return fmt.Errorf("%s: %w", ifc, err)
			}
			opts.Mode = cur.Mode
			opts.ReplaceFD = oldProg.FD()
			_, err = xdp.Attach(ifc, progFD, opts)
			oldProg.Close()
			stats.Close()
			if err != nil {
				return fmt.Errorf("replacing the attached program on %s: %w", ifc, err)
			}
		} else if _, err := xdp.Attach(ifc, progFD, opts); err != nil {
			return err
		}
		lb.attached = append(lb.attached, ifc)
	}
	for _, ifc := range old {
		if slices.Contains(cfg.ifaces(), ifc) {
			continue
		}
		if cur, err := xdp.Query(ifc); err == nil && cur.Attached {
			if p, stats, err := kern.Attached(cur.ProgID); err == nil { // ours
				p.Close()
				stats.Close()
				if err := xdp.Detach(ifc, cur.ProgID); err != nil {
					lb.log.Warn("removing the old program from an interface no longer listed", "iface", ifc, "err", err)
				}
			}
		}
	}
	return nil
}

// startLoopsAfterHandover starts the loops; the control socket is taken over
// once the old process has let go of it.
func (lb *LB) startLoopsAfterHandover() error {
	path := lb.socketPath()
	os.Remove(path) // the old process still holds its listener; the path is ours
	ln, err := listenControlAt(path)
	if err != nil {
		return err
	}
	lb.control = ln
	go lb.serveControl(ln)
	return lb.startLoops()
}
