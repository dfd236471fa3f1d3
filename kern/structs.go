package kern

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// The Go mirror of structs.h. Every layout has a size constant and explicit
// marshalling in native byte order (the BPF object is little-endian, as are
// the targets we build for); TestLayoutsMatchC compiles structs.h with clang
// and compares sizes and offsets.

var ne = binary.NativeEndian

// LegKind is enum leg_kind.
type LegKind uint8

const (
	LegClient LegKind = 1
	LegWorker LegKind = 2
)

func (k LegKind) String() string {
	switch k {
	case LegClient:
		return "client"
	case LegWorker:
		return "worker"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// LegState is enum leg_state.
type LegState uint32

const (
	LegIdle    LegState = 1
	LegBound   LegState = 2
	LegClosing LegState = 3
	LegDead    LegState = 4
	LegParked  LegState = 5
	LegNew     LegState = 6 // a worker leg registered, not yet in its pool (CtlPool)
	LegCooling LegState = 7 // a worker leg a leaving client gave back, quiet for a while before reuse
)

func (s LegState) String() string {
	switch s {
	case LegIdle:
		return "idle"
	case LegBound:
		return "bound"
	case LegClosing:
		return "closing"
	case LegDead:
		return "dead"
	case LegParked:
		return "parked"
	case LegNew:
		return "new"
	case LegCooling:
		return "cooling"
	}
	return fmt.Sprintf("state(%d)", uint32(s))
}

// Leg options (enum leg_opt) and rx flags (enum leg_rx_flag).
const (
	OptTS     = 1
	OptSACK   = 2
	OptWScale = 4
	OptPeerTS = 8

	RxFIN = 1
	RxRST = 2
)

const afInet = 2

// LegKey is struct leg_key: the 4-tuple of packets arriving from the peer.
type LegKey struct {
	Peer  netip.AddrPort
	Local netip.AddrPort
}

// LegKeySize is sizeof(struct leg_key).
const LegKeySize = 40

func (k LegKey) String() string { return k.Peer.String() + "->" + k.Local.String() }

// MarshalBinary encodes the key (IPv4 only for now).
func (k LegKey) MarshalBinary() ([]byte, error) {
	b := make([]byte, LegKeySize)
	if err := k.put(b); err != nil {
		return nil, err
	}
	return b, nil
}

func (k LegKey) put(b []byte) error {
	if !k.Peer.Addr().Is4() || !k.Local.Addr().Is4() {
		return fmt.Errorf("leg %s: only IPv4 legs are supported", k)
	}
	clear(b[:LegKeySize])
	p, l := k.Peer.Addr().As4(), k.Local.Addr().As4()
	copy(b[0:4], p[:])
	copy(b[16:20], l[:])
	binary.BigEndian.PutUint16(b[32:], k.Peer.Port())
	binary.BigEndian.PutUint16(b[34:], k.Local.Port())
	b[36] = afInet
	return nil
}

// UnmarshalBinary decodes a key.
func (k *LegKey) UnmarshalBinary(b []byte) error {
	if len(b) < LegKeySize {
		return fmt.Errorf("leg key: %d bytes, want %d", len(b), LegKeySize)
	}
	if b[36] != afInet {
		return fmt.Errorf("leg key: family %d not supported", b[36])
	}
	k.Peer = netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[0:4])), binary.BigEndian.Uint16(b[32:]))
	k.Local = netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[16:20])), binary.BigEndian.Uint16(b[34:]))
	return nil
}

// Leg is struct leg.
type Leg struct {
	Kind       LegKind
	PeerWScale uint8
	OurWScale  uint8
	Opts       uint8
	PeerMSS    uint16
	OurMSS     uint16
	Worker     uint32
	WinBound   uint32
	PeerHi     uint32
	PeerAcked  uint32
	PeerTSval  uint32
	PeerWin    uint32
	ReqMark    uint32
	RxFlags    uint32
	Requests   uint32
	SndNxt     uint32
	OurTSval   uint32
	SndWin     uint32
	State      LegState
	SentHi     uint32    // worker legs: end of the client data forwarded to the worker
	Pin        PinReason // the pair is pinned for life (PinNone: free)
	Proto      Proto     // client legs: the protocol
	Tail       uint8     // client legs: TailPSH | TailCRLF of the data that ended at PeerHi
	LastNs     uint64
}

// LegSize is sizeof(struct leg).
const LegSize = 80

// Tail flags of a client leg (enum leg_tail).
const (
	TailPSH  = 1
	TailCRLF = 2
)

// Proto is enum xlb_proto: the protocol of a client connection.
type Proto uint8

const (
	ProtoNone     Proto = 0
	ProtoHTTP     Proto = 1
	ProtoRESP     Proto = 2
	ProtoMemcache Proto = 3
	ProtoOpaque   Proto = 4
)

func (p Proto) String() string {
	switch p {
	case ProtoNone:
		return "-"
	case ProtoHTTP:
		return "http"
	case ProtoRESP:
		return "resp"
	case ProtoMemcache:
		return "memcache"
	case ProtoOpaque:
		return "opaque"
	}
	return fmt.Sprintf("proto(%d)", uint8(p))
}

// PinReason is enum pin_reason: why a pair stays together for life.
type PinReason uint32

const (
	PinNone PinReason = iota
	PinTLS
	PinUpgrade
	PinInterim
	PinPipelined
	PinNotMsg
	PinRaw
	PinUnknown
	PinStateful
	PinMax
)

var pinNames = [PinMax]string{
	PinNone:      "",
	PinTLS:       "tls",
	PinUpgrade:   "upgrade",
	PinInterim:   "interim",
	PinPipelined: "pipelined",
	PinNotMsg:    "not-a-message-start",
	PinRaw:       "raw",
	PinUnknown:   "unknown-protocol",
	PinStateful:  "stateful",
}

func (r PinReason) String() string {
	if r < PinMax {
		return pinNames[r]
	}
	return fmt.Sprintf("pin(%d)", uint32(r))
}

// Counter is the data-plane counter of pins for this reason.
func (r PinReason) Counter() Counter { return CounterPinTLS - 1 + Counter(r) }

// Protocol is enum cfg_protocol: --protocol.
type Protocol uint8

const (
	ProtocolAuto     Protocol = 0
	ProtocolHTTP     Protocol = 1
	ProtocolRESP     Protocol = 2
	ProtocolMemcache Protocol = 3
	ProtocolRaw      Protocol = 4
)

// Protocols are the values of --protocol, by name.
var Protocols = map[string]Protocol{
	"auto": ProtocolAuto, "http": ProtocolHTTP, "resp": ProtocolRESP, "memcache": ProtocolMemcache, "raw": ProtocolRaw,
}

func (l *Leg) MarshalBinary() ([]byte, error) {
	b := make([]byte, LegSize)
	b[0], b[1], b[2], b[3] = uint8(l.Kind), l.PeerWScale, l.OurWScale, l.Opts
	ne.PutUint16(b[4:], l.PeerMSS)
	ne.PutUint16(b[6:], l.OurMSS)
	for i, v := range []uint32{l.Worker, l.WinBound, l.PeerHi, l.PeerAcked, l.PeerTSval, l.PeerWin,
		l.ReqMark, l.RxFlags, l.Requests, l.SndNxt, l.OurTSval, l.SndWin, uint32(l.State)} {
		ne.PutUint32(b[8+4*i:], v)
	}
	ne.PutUint32(b[60:], l.SentHi)
	ne.PutUint32(b[64:], uint32(l.Pin))
	b[68], b[69] = uint8(l.Proto), l.Tail
	ne.PutUint64(b[72:], l.LastNs)
	return b, nil
}

func (l *Leg) UnmarshalBinary(b []byte) error {
	if len(b) < LegSize {
		return fmt.Errorf("leg: %d bytes, want %d", len(b), LegSize)
	}
	l.Kind, l.PeerWScale, l.OurWScale, l.Opts = LegKind(b[0]), b[1], b[2], b[3]
	l.PeerMSS = ne.Uint16(b[4:])
	l.OurMSS = ne.Uint16(b[6:])
	u := func(i int) uint32 { return ne.Uint32(b[8+4*i:]) }
	l.Worker, l.WinBound, l.PeerHi, l.PeerAcked, l.PeerTSval, l.PeerWin = u(0), u(1), u(2), u(3), u(4), u(5)
	l.ReqMark, l.RxFlags, l.Requests, l.SndNxt, l.OurTSval, l.SndWin = u(6), u(7), u(8), u(9), u(10), u(11)
	l.State = LegState(u(12))
	l.SentHi, l.Pin = u(13), PinReason(u(14))
	l.Proto, l.Tail = Proto(b[68]), b[69]
	l.LastNs = ne.Uint64(b[72:])
	return nil
}

// Binding is struct binding.
type Binding struct {
	To        LegKey
	SeqOff    uint32
	AckOff    uint32
	TSvalOff  uint32
	TSecrOff  uint32
	InWScale  uint8
	OutWScale uint8
	Flags     uint8
	Proto     Proto // the client's protocol
	Worker    uint32
	Ifindex   uint32
}

// BindingSize is sizeof(struct binding).
const BindingSize = 68

// BindToClient is enum binding_flag BIND_TO_CLIENT: the partner is a client leg.
const BindToClient = 2

func (bd *Binding) UnmarshalBinary(b []byte) error {
	if len(b) < BindingSize {
		return fmt.Errorf("binding: %d bytes, want %d", len(b), BindingSize)
	}
	if err := bd.To.UnmarshalBinary(b); err != nil {
		return err
	}
	bd.SeqOff, bd.AckOff = ne.Uint32(b[40:]), ne.Uint32(b[44:])
	bd.TSvalOff, bd.TSecrOff = ne.Uint32(b[48:]), ne.Uint32(b[52:])
	bd.InWScale, bd.OutWScale, bd.Flags, bd.Proto = b[56], b[57], b[58], Proto(b[59])
	bd.Worker, bd.Ifindex = ne.Uint32(b[60:]), ne.Uint32(b[64:])
	return nil
}

func (bd *Binding) MarshalBinary() ([]byte, error) {
	b := make([]byte, BindingSize)
	if err := bd.To.put(b); err != nil {
		return nil, err
	}
	ne.PutUint32(b[40:], bd.SeqOff)
	ne.PutUint32(b[44:], bd.AckOff)
	ne.PutUint32(b[48:], bd.TSvalOff)
	ne.PutUint32(b[52:], bd.TSecrOff)
	b[56], b[57], b[58], b[59] = bd.InWScale, bd.OutWScale, bd.Flags, uint8(bd.Proto)
	ne.PutUint32(b[60:], bd.Worker)
	ne.PutUint32(b[64:], bd.Ifindex)
	return b, nil
}

// Handshake is struct handshake.
type Handshake struct {
	PeerISN    uint32
	PeerTSval  uint32
	PeerMSS    uint16
	PeerWScale uint8 // NoWScale if the peer offered none
	Opts       uint8
	OurISN     uint32
	Ns         uint64
}

// HandshakeSize is sizeof(struct handshake).
const HandshakeSize = 24

// NoWScale marks a handshake without a window-scale option.
const NoWScale = 0xff

func (h *Handshake) UnmarshalBinary(b []byte) error {
	if len(b) < HandshakeSize {
		return fmt.Errorf("handshake: %d bytes, want %d", len(b), HandshakeSize)
	}
	h.PeerISN, h.PeerTSval = ne.Uint32(b[0:]), ne.Uint32(b[4:])
	h.PeerMSS, h.PeerWScale, h.Opts = ne.Uint16(b[8:]), b[10], b[11]
	h.OurISN = ne.Uint32(b[12:])
	h.Ns = ne.Uint64(b[16:])
	return nil
}

// Endpoint is struct endpoint: a worker's address.
type Endpoint netip.AddrPort

// EndpointSize is sizeof(struct endpoint).
const EndpointSize = 20

func (e Endpoint) MarshalBinary() ([]byte, error) {
	ap := netip.AddrPort(e)
	if !ap.Addr().Is4() {
		return nil, fmt.Errorf("worker %s: only IPv4 workers are supported", ap)
	}
	b := make([]byte, EndpointSize)
	a := ap.Addr().As4()
	copy(b, a[:])
	binary.BigEndian.PutUint16(b[16:], ap.Port())
	b[18] = afInet
	return b, nil
}

// WorkerInfo is struct worker_info.
type WorkerInfo struct {
	ID    uint32
	Flags uint32
}

// WorkerInfoSize is sizeof(struct worker_info).
const WorkerInfoSize = 8

// WorkerDrain is enum worker_flag WORKER_DRAIN.
const WorkerDrain = 1

func (w *WorkerInfo) MarshalBinary() ([]byte, error) {
	b := make([]byte, WorkerInfoSize)
	ne.PutUint32(b, w.ID)
	ne.PutUint32(b[4:], w.Flags)
	return b, nil
}

// WorkerCfg is struct worker_cfg.
type WorkerCfg struct {
	Flags  uint32
	Trim   int32
	Weight uint32
	Low    uint32 // EventPoolLow when a take leaves this many idle legs (0: never)
	CoolUs uint32 // how long a leg a leaving client gave back stays quiet before reuse (0: 20 ms)
}

// WorkerCfgSize is sizeof(struct worker_cfg).
const WorkerCfgSize = 24

func (w *WorkerCfg) MarshalBinary() ([]byte, error) {
	b := make([]byte, WorkerCfgSize)
	ne.PutUint32(b, w.Flags)
	ne.PutUint32(b[4:], uint32(w.Trim))
	ne.PutUint32(b[8:], w.Weight)
	ne.PutUint32(b[12:], w.Low)
	ne.PutUint32(b[16:], w.CoolUs)
	return b, nil
}

func (w *WorkerCfg) UnmarshalBinary(b []byte) error {
	if len(b) < WorkerCfgSize {
		return fmt.Errorf("worker cfg: %d bytes, want %d", len(b), WorkerCfgSize)
	}
	w.Flags, w.Trim, w.Weight, w.Low = ne.Uint32(b), int32(ne.Uint32(b[4:])), ne.Uint32(b[8:]), ne.Uint32(b[12:])
	w.CoolUs = ne.Uint32(b[16:])
	return nil
}

// WorkerLoad is struct worker_load, kept by the data plane with atomics.
type WorkerLoad struct {
	Bound   int64 // legs bound to a client
	Idle    int64 // legs in state LegIdle
	Cooling int64 // legs in state LegCooling
}

// WorkerLoadSize is sizeof(struct worker_load).
const WorkerLoadSize = 24

func (w *WorkerLoad) UnmarshalBinary(b []byte) error {
	if len(b) < WorkerLoadSize {
		return fmt.Errorf("worker load: %d bytes, want %d", len(b), WorkerLoadSize)
	}
	w.Bound, w.Idle, w.Cooling = int64(ne.Uint64(b)), int64(ne.Uint64(b[8:])), int64(ne.Uint64(b[16:]))
	return nil
}

// Policy is enum xlb_policy.
type Policy uint8

const (
	PolicyJIQ    Policy = 0
	PolicyRR     Policy = 1
	PolicyLeast  Policy = 2
	PolicySticky Policy = 3
)

// CtlOp is enum ctl_op: a command for the control program.
type CtlOp uint32

const (
	CtlPark    CtlOp = 1
	CtlRelease CtlOp = 2
	CtlUnpark  CtlOp = 3
	// CtlRetireIdle takes one entry off a draining worker's pool.
	CtlRetireIdle CtlOp = 4
	// CtlPool puts a new worker leg (LegNew) into its worker's pool.
	CtlPool CtlOp = 5
	// CtlWarm moves cooled worker legs to their pools (true: run again).
	CtlWarm CtlOp = 6
)

// CtlMsg is struct ctl_msg, the input of the control program.
type CtlMsg struct {
	Op        CtlOp
	Worker    uint32 // CtlRetireIdle
	MinIdleNs uint64
	Key       LegKey
}

// CtlMsgSize is sizeof(struct ctl_msg).
const CtlMsgSize = 16 + LegKeySize

func (m *CtlMsg) MarshalBinary() ([]byte, error) {
	b := make([]byte, CtlMsgSize)
	ne.PutUint32(b, uint32(m.Op))
	ne.PutUint32(b[4:], m.Worker)
	ne.PutUint64(b[8:], m.MinIdleNs)
	if m.Key == (LegKey{}) {
		return b, nil // a command of no leg (CtlRetireIdle)
	}
	if err := m.Key.put(b[16:]); err != nil {
		return nil, err
	}
	return b, nil
}

// WorkerStats is struct worker_stats, summed over CPUs.
type WorkerStats struct {
	Binds, Releases, Requests, BytesIn, BytesOut uint64
}

// WorkerStatsSize is sizeof(struct worker_stats).
const WorkerStatsSize = 40

// AddPerCPU adds one CPU's value (WorkerStatsSize bytes).
func (w *WorkerStats) AddPerCPU(b []byte) {
	w.Binds += ne.Uint64(b[0:])
	w.Releases += ne.Uint64(b[8:])
	w.Requests += ne.Uint64(b[16:])
	w.BytesIn += ne.Uint64(b[24:])
	w.BytesOut += ne.Uint64(b[32:])
}

// Config is struct xlb_config.
type Config struct {
	ListenAddr netip.Addr // unspecified: any local address
	ListenPort uint16
	OurWScale  uint8
	Flags      uint8
	OurMSS     uint16
	Policy     Policy
	Protocol   Protocol
	SchedLen   uint32 // entries of xlb_sched in use
}

// ConfigSize is sizeof(struct xlb_config).
const ConfigSize = 32

// Config flags (enum config_flag).
const (
	ConfigRouted = 1 // forward rewritten packets out instead of to the stack
)

// UnmarshalBinary decodes the config.
func (c *Config) UnmarshalBinary(b []byte) error {
	if len(b) < ConfigSize {
		return fmt.Errorf("config: %d bytes, want %d", len(b), ConfigSize)
	}
	a := [4]byte(b[0:4])
	c.ListenAddr = netip.AddrFrom4(a)
	if c.ListenAddr.IsUnspecified() {
		c.ListenAddr = netip.Addr{}
	}
	c.ListenPort = binary.BigEndian.Uint16(b[16:])
	c.OurWScale, c.Flags = b[18], b[19]
	c.OurMSS = ne.Uint16(b[20:])
	c.Policy, c.Protocol = Policy(b[22]), Protocol(b[23])
	c.SchedLen = ne.Uint32(b[24:])
	return nil
}

func (c *Config) MarshalBinary() ([]byte, error) {
	b := make([]byte, ConfigSize)
	if c.ListenAddr.IsValid() && !c.ListenAddr.IsUnspecified() {
		if !c.ListenAddr.Is4() {
			return nil, fmt.Errorf("listen address %s: only IPv4 is supported", c.ListenAddr)
		}
		a := c.ListenAddr.As4()
		copy(b, a[:])
	}
	binary.BigEndian.PutUint16(b[16:], c.ListenPort)
	b[18], b[19] = c.OurWScale, c.Flags
	ne.PutUint16(b[20:], c.OurMSS)
	b[22], b[23] = byte(c.Policy), byte(c.Protocol)
	ne.PutUint32(b[24:], c.SchedLen)
	return b, nil
}

// EventType is enum event_type.
type EventType uint32

const (
	EventClientLeg EventType = 1
	EventLegClosed EventType = 2
	EventPoolEmpty EventType = 3
	EventPoolLow   EventType = 4
)

func (t EventType) String() string {
	switch t {
	case EventClientLeg:
		return "client-leg"
	case EventLegClosed:
		return "leg-closed"
	case EventPoolEmpty:
		return "pool-empty"
	case EventPoolLow:
		return "pool-low"
	}
	return fmt.Sprintf("event(%d)", uint32(t))
}

// Event is struct xlb_event.
type Event struct {
	Type       EventType
	State      LegState
	Key        LegKey
	Worker     uint32  // worker legs: the worker id
	Kind       LegKind // the leg's kind
	Pin        PinReason
	PeerHi     uint32
	SndNxt     uint32
	PeerTSval  uint32
	OurTSval   uint32
	PeerWScale uint8
	OurWScale  uint8
	Opts       uint8
	RxFlags    uint8
	PeerMSS    uint16
}

// EventSize is sizeof(struct xlb_event).
const EventSize = 80

func (e *Event) UnmarshalBinary(b []byte) error {
	if len(b) < EventSize {
		return fmt.Errorf("event: %d bytes, want %d", len(b), EventSize)
	}
	e.Type, e.State = EventType(ne.Uint32(b[0:])), LegState(ne.Uint32(b[4:]))
	if e.Type != EventPoolLow { // about a worker, not a leg
		if err := e.Key.UnmarshalBinary(b[8:]); err != nil {
			return err
		}
	}
	e.Worker, e.Kind, e.Pin = ne.Uint32(b[48:]), LegKind(b[52]), PinReason(b[53])
	e.PeerHi, e.SndNxt = ne.Uint32(b[56:]), ne.Uint32(b[60:])
	e.PeerTSval, e.OurTSval = ne.Uint32(b[64:]), ne.Uint32(b[68:])
	e.PeerWScale, e.OurWScale, e.Opts, e.RxFlags = b[72], b[73], b[74], b[75]
	e.PeerMSS = ne.Uint16(b[76:])
	return nil
}
