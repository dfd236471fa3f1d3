package kern

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
)

//go:generate go run ./gen

// The Go mirror of structs.h. This file names the types, their fields and
// what an encoding means (only IPv4 legs, a zero key in an event); the
// layouts are generated: zlayout.go, written by kern/gen from the BTF of the
// built object (bpf/xlb.o, where bpf/anchors.h puts every shared struct and
// enum), has each struct's size constant, its encode and decode methods at
// the offsets clang chose, and the values of the enums. Multi-byte fields
// are in native byte order (the host's, as the kernel's maps are), those
// named __be in network order. TestLayoutGenerated fails if zlayout.go is not
// what kern/gen would write from the object: run go generate ./kern/ (make
// does it when the object changes).

var ne = binary.NativeEndian

// Address families of the family members (linux/socket.h).
const (
	afInet  = 2
	afInet6 = 10
)

// putAddr writes a into an address member (__be32[4]): an IPv4 address in
// its first four bytes and zeros after, an IPv6 address whole, zeros for
// the zero Addr.
func putAddr(b []byte, a netip.Addr) {
	clear(b[:16])
	switch {
	case a.Is4():
		a4 := a.As4()
		copy(b, a4[:])
	case a.Is6():
		a16 := a.As16()
		copy(b, a16[:])
	}
}

// addrFrom reads an address member of the given family: the zero Addr for a
// family other than AF_INET and AF_INET6.
func addrFrom(b []byte, family uint8) netip.Addr {
	switch family {
	case afInet:
		return netip.AddrFrom4([4]byte(b[:4]))
	case afInet6:
		return netip.AddrFrom16([16]byte(b[:16]))
	}
	return netip.Addr{}
}

// addrFamily is the family member that goes with a: 0 for the zero Addr.
func addrFamily(a netip.Addr) uint8 {
	switch {
	case a.Is4():
		return afInet
	case a.Is6():
		return afInet6
	}
	return 0
}

// LegKind is enum leg_kind: LegClient, LegWorker.
type LegKind uint8

func (k LegKind) String() string {
	switch k {
	case LegClient:
		return "client"
	case LegWorker:
		return "worker"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// LegState is enum leg_state: LegIdle, LegBound, LegClosing, LegDead,
// LegParked, LegNew (a worker leg registered, not yet in its pool: CtlPool
// puts it there), LegCooling (a worker leg a leaving client gave back, quiet
// for a while before reuse).
type LegState uint32

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

// LegKey is struct leg_key: the 4-tuple of packets arriving from the peer.
type LegKey struct {
	Peer  netip.AddrPort
	Local netip.AddrPort
}

func (k LegKey) String() string { return k.Peer.String() + "->" + k.Local.String() }

// MarshalBinary encodes the key: both ends IPv4, or both IPv6.
func (k LegKey) MarshalBinary() ([]byte, error) {
	if err := k.check(); err != nil {
		return nil, err
	}
	b := make([]byte, LegKeySize)
	k.encode(b)
	return b, nil
}

// check says whether the data plane can have a leg of this key.
func (k *LegKey) check() error {
	if !k.decodedOK() {
		return fmt.Errorf("leg %s: both ends must be IPv4 or both IPv6 (an IPv4-mapped address is IPv4: Unmap it)", *k)
	}
	return nil
}

// UnmarshalBinary decodes a key.
func (k *LegKey) UnmarshalBinary(b []byte) error {
	if len(b) < LegKeySize {
		return fmt.Errorf("leg key: %d bytes, want %d", len(b), LegKeySize)
	}
	k.decode(b)
	if !k.decodedOK() {
		return k.badKey()
	}
	return nil
}

// decodedOK says whether a key is one the data plane makes: both ends of
// one family, IPv4 or IPv6 (an IPv4-mapped IPv6 address is neither).
func (k *LegKey) decodedOK() bool {
	p, l := k.Peer.Addr(), k.Local.Addr()
	return (p.Is4() && l.Is4()) || (p.Is6() && l.Is6() && !p.Is4In6() && !l.Is4In6())
}

func (k *LegKey) badKey() error {
	return fmt.Errorf("leg key %s: not an IPv4 or IPv6 key (the family is neither AF_INET nor AF_INET6)", *k)
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
	WinEdge    uint32    // worker legs: right edge of the window last sent to the worker
	CliEdge    uint32    // worker legs: right edge of the window the client was last offered (worker's sequence space)
	LastNs     uint64
	// Request records (worker legs): ReqNs is when the logged request
	// started (0: not logged), FirstUs and LastUs its answer's first and
	// last bytes (microseconds after, plus 1), ReqTx SentHi then.
	ReqNs   uint64
	FirstUs uint32
	LastUs  uint32
	ReqTx   uint32
}

// Proto is enum xlb_proto: the protocol of a client connection.
type Proto uint8

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

// PinReason is enum pin_reason: why a pair stays together for life (PinMax:
// one past the last reason).
type PinReason uint32

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
	PinClose:     "close",
}

func (r PinReason) String() string {
	if r < PinMax {
		return pinNames[r]
	}
	return fmt.Sprintf("pin(%d)", uint32(r))
}

// Counter is the data-plane counter of pins for this reason (PinClose's
// came later than the others' run).
func (r PinReason) Counter() Counter {
	if r == PinClose {
		return CounterPinClose
	}
	return CounterPinTLS - 1 + Counter(r)
}

// Protocol is enum cfg_protocol: --protocol.
type Protocol uint8

// Protocols are the values of --protocol, by name.
var Protocols = map[string]Protocol{
	"auto": ProtocolAuto, "http": ProtocolHTTP, "resp": ProtocolRESP, "memcache": ProtocolMemcache, "raw": ProtocolRaw,
}

func (l *Leg) MarshalBinary() ([]byte, error) {
	b := make([]byte, LegSize)
	l.encode(b)
	return b, nil
}

func (l *Leg) UnmarshalBinary(b []byte) error {
	if len(b) < LegSize {
		return fmt.Errorf("leg: %d bytes, want %d", len(b), LegSize)
	}
	l.decode(b)
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
	// HTTP/1.0 keep-alive (BindKeep, BindFinAt): where the framed answer
	// ends (worker's space), and the request segment the data plane grew.
	FinAt   uint32
	MarkSeq uint32
	MarkLen uint16
}

func (bd *Binding) UnmarshalBinary(b []byte) error {
	if len(b) < BindingSize {
		return fmt.Errorf("binding: %d bytes, want %d", len(b), BindingSize)
	}
	bd.decode(b)
	if !bd.To.decodedOK() {
		return bd.To.badKey()
	}
	return nil
}

func (bd *Binding) MarshalBinary() ([]byte, error) {
	if err := bd.To.check(); err != nil {
		return nil, err
	}
	b := make([]byte, BindingSize)
	bd.encode(b)
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
	Flags      uint32 // HSAnswered, HSDialed, HSRetry, HSRefused
	// A dialed handshake's (HSDialed): what user space's SYN offered.
	OurMSS    uint16
	OurWScale uint8
	OurOpts   uint8
	Ns        uint64
	Worker    uint32 // a dialed handshake's worker id
}

// NoWScale marks a handshake without a window-scale option.
const NoWScale = 0xff

func (h *Handshake) MarshalBinary() ([]byte, error) {
	b := make([]byte, HandshakeSize)
	h.encode(b)
	return b, nil
}

func (h *Handshake) UnmarshalBinary(b []byte) error {
	if len(b) < HandshakeSize {
		return fmt.Errorf("handshake: %d bytes, want %d", len(b), HandshakeSize)
	}
	h.decode(b)
	return nil
}

// Endpoint is struct endpoint: a worker's address.
type Endpoint netip.AddrPort

func (e Endpoint) MarshalBinary() ([]byte, error) {
	if a := netip.AddrPort(e).Addr(); !a.Is4() && (!a.Is6() || a.Is4In6()) {
		return nil, fmt.Errorf("worker %s: not an IPv4 or IPv6 address (an IPv4-mapped address is IPv4: Unmap it)", netip.AddrPort(e))
	}
	b := make([]byte, EndpointSize)
	e.encode(b)
	return b, nil
}

// WorkerInfo is struct worker_info.
type WorkerInfo struct {
	ID    uint32
	Flags uint32
}

func (w *WorkerInfo) MarshalBinary() ([]byte, error) {
	b := make([]byte, WorkerInfoSize)
	w.encode(b)
	return b, nil
}

// WorkerCfg is struct worker_cfg.
type WorkerCfg struct {
	Flags  uint32 // WorkerDrain
	Trim   int32
	Weight uint32
	Low    uint32 // EventPoolLow when a take leaves this many idle legs (0: never)
	CoolUs uint32 // how long a leg a leaving client gave back stays quiet before reuse (0: 20 ms)
}

func (w *WorkerCfg) MarshalBinary() ([]byte, error) {
	b := make([]byte, WorkerCfgSize)
	w.encode(b)
	return b, nil
}

func (w *WorkerCfg) UnmarshalBinary(b []byte) error {
	if len(b) < WorkerCfgSize {
		return fmt.Errorf("worker cfg: %d bytes, want %d", len(b), WorkerCfgSize)
	}
	w.decode(b)
	return nil
}

// WorkerLoad is struct worker_load, kept by the data plane with atomics.
type WorkerLoad struct {
	Bound   int64 // legs bound to a client
	Idle    int64 // legs in state LegIdle
	Cooling int64 // legs in state LegCooling
}

func (w *WorkerLoad) UnmarshalBinary(b []byte) error {
	if len(b) < WorkerLoadSize {
		return fmt.Errorf("worker load: %d bytes, want %d", len(b), WorkerLoadSize)
	}
	w.decode(b)
	return nil
}

// Policy is enum xlb_policy: PolicyJIQ, PolicyRR, PolicyLeast, PolicySticky.
type Policy uint8

// CtlOp is enum ctl_op: a command for the control program. CtlPark,
// CtlRelease and CtlUnpark act on a client leg; CtlRetireIdle takes one
// entry off a draining worker's pool; CtlPool puts a new worker leg (LegNew)
// into its worker's pool; CtlWarm moves cooled worker legs to their pools
// (true: run again).
type CtlOp uint32

// CtlMsg is struct ctl_msg, the input of the control program.
type CtlMsg struct {
	Op        CtlOp
	Worker    uint32 // CtlRetireIdle
	MinIdleNs uint64
	Key       LegKey // zero for a command of no leg (CtlRetireIdle): all zero bytes
	PeerHi    uint32 // CtlForget
	Items     uint32 // CtlPool, CtlForget: CtlItem records that follow (at most CtlItemsMax)
}

// CtlItem is struct ctl_item: one more leg of a CtlPool (Arg: its worker)
// or CtlForget (Arg: its peer_hi as reported) run, after the CtlMsg; the
// program sets Done.
type CtlItem struct {
	Key  LegKey
	Arg  uint32
	Done uint32
}

// CtlItemsMax is XLB_CTL_ITEMS: the most CtlItem records one run takes.
const CtlItemsMax = 31

func (it *CtlItem) MarshalBinary() ([]byte, error) {
	if err := it.Key.check(); err != nil {
		return nil, err
	}
	b := make([]byte, CtlItemSize)
	it.encode(b)
	return b, nil
}

func (it *CtlItem) UnmarshalBinary(b []byte) error {
	if len(b) < CtlItemSize {
		return fmt.Errorf("ctl item: %d bytes, want %d", len(b), CtlItemSize)
	}
	it.decode(b)
	return nil
}

func (m *CtlMsg) MarshalBinary() ([]byte, error) {
	if m.Key != (LegKey{}) {
		if err := m.Key.check(); err != nil {
			return nil, err
		}
	}
	b := make([]byte, CtlMsgSize)
	m.encode(b)
	return b, nil
}

// WorkerStats is struct worker_stats, summed over CPUs.
type WorkerStats struct {
	Binds, Releases, Requests, BytesIn, BytesOut uint64
}

// AddPerCPU adds one CPU's value (WorkerStatsSize bytes).
func (w *WorkerStats) AddPerCPU(b []byte) { w.add(b) }

// Config is struct xlb_config.
type Config struct {
	ListenAddr netip.Addr // the zero Addr: any local address; 0.0.0.0 or ::, any of that family
	ListenPort uint16
	OurWScale  uint8
	Flags      uint8 // ConfigRouted: forward rewritten packets out instead of to the stack
	OurMSS     uint16
	Policy     Policy
	Protocol   Protocol
	SchedLen   uint32 // entries of xlb_sched in use
	SchedLen6  uint32 // ... of xlb_sched6 (the IPv6 workers')
	OurMSS6    uint16 // the MSS announced to IPv6 clients (0: OurMSS)
	// RestWin is the window, in bytes, a worker is left with once a client
	// acknowledged all it sent (structs.h: rest_win); the data plane lowers
	// it to the smallest window a client opens with.
	RestWin uint32
	// LogEvery: request records for none (0), every (1) or one in N
	// requests (xlb_reqlog).
	LogEvery uint32
}

// UnmarshalBinary decodes the config.
func (c *Config) UnmarshalBinary(b []byte) error {
	if len(b) < ConfigSize {
		return fmt.Errorf("config: %d bytes, want %d", len(b), ConfigSize)
	}
	c.decode(b)
	return nil
}

func (c *Config) MarshalBinary() ([]byte, error) {
	if a := c.ListenAddr; a.Is4In6() {
		return nil, fmt.Errorf("listen address %s: an IPv4-mapped address (Unmap it)", a)
	}
	b := make([]byte, ConfigSize)
	c.encode(b)
	return b, nil
}

// EventType is enum event_type.
type EventType uint32

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
	case EventHeld:
		return "held"
	case EventDemand:
		return "demand"
	}
	return fmt.Sprintf("event(%d)", uint32(t))
}

// Event is struct xlb_event.
type Event struct {
	Type       EventType
	State      LegState
	Key        LegKey  // zero for EventPoolLow (about a worker, not a leg)
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

func (e *Event) UnmarshalBinary(b []byte) error {
	if len(b) < EventSize {
		return fmt.Errorf("event: %d bytes, want %d", len(b), EventSize)
	}
	e.decode(b)
	if e.Type == EventPoolLow {
		e.Key = LegKey{} // about a worker, not a leg
		return nil
	}
	if !e.Key.decodedOK() {
		return e.Key.badKey()
	}
	return nil
}

// HeldHeader is struct held_hdr, the start of a value of xlb_held: a
// client's frame the data plane kept because every pool was empty. The
// frame follows it (Held).
type HeldHeader struct {
	AtNs uint64 // now_ns() when it was kept
	Len  uint32 // bytes of the frame
	Seq  uint32 // its sequence number
}

// Held is a value of xlb_held, decoded.
type Held struct {
	HeldHeader
	Frame []byte
}

// UnmarshalBinary decodes a value of xlb_held (its frame is copied).
func (h *Held) UnmarshalBinary(b []byte) error {
	if len(b) < HeldHeaderSize {
		return fmt.Errorf("held frame: %d bytes, want at least %d", len(b), HeldHeaderSize)
	}
	h.HeldHeader.decode(b)
	if int(h.Len) > len(b)-HeldHeaderSize {
		return fmt.Errorf("held frame: length %d past its %d bytes", h.Len, len(b)-HeldHeaderSize)
	}
	h.Frame = bytes.Clone(b[HeldHeaderSize : HeldHeaderSize+int(h.Len)])
	return nil
}

// CoolingEntry is struct cooling: an entry of xlb_cooling, a worker leg that
// a leaving client gave back and when it may serve another.
type CoolingEntry struct {
	Key   LegKey
	DueNs uint64 // now_ns() from which it may serve another client
}

func (c *CoolingEntry) MarshalBinary() ([]byte, error) {
	if err := c.Key.check(); err != nil {
		return nil, err
	}
	b := make([]byte, CoolingEntrySize)
	c.encode(b)
	return b, nil
}

func (c *CoolingEntry) UnmarshalBinary(b []byte) error {
	if len(b) < CoolingEntrySize {
		return fmt.Errorf("cooling entry: %d bytes, want %d", len(b), CoolingEntrySize)
	}
	c.decode(b)
	if !c.Key.decodedOK() {
		return c.Key.badKey()
	}
	return nil
}

// ReqEnd is enum req_end: how a logged exchange ended.
type ReqEnd uint32

func (e ReqEnd) String() string {
	switch e {
	case ReqEndNext:
		return "next"
	case ReqEndRelease:
		return "release"
	case ReqEndClose:
		return "close"
	case ReqEndReset:
		return "reset"
	}
	return fmt.Sprintf("end%d", uint32(e))
}

// ReqRecord is struct req_record: a logged request, read from xlb_reqlog.
type ReqRecord struct {
	Client    LegKey // the client's connection (Peer: the client)
	WLeg      LegKey // the worker connection (Peer: the worker)
	Worker    uint32
	End       ReqEnd
	Pin       PinReason
	Request   uint32 // its number on the client's connection (1: the first)
	ReqBytes  uint32
	RespBytes uint32
	StartNs   uint64 // CLOCK_MONOTONIC
	EndNs     uint64
	FirstUs   uint32 // the answer's first byte, microseconds after StartNs, plus 1 (0: no answer)
	LastUs    uint32 // its last byte, the same way
}

// UnmarshalBinary decodes a record.
func (r *ReqRecord) UnmarshalBinary(b []byte) error {
	if len(b) < ReqRecordSize {
		return fmt.Errorf("request record: %d bytes, want %d", len(b), ReqRecordSize)
	}
	r.decode(b)
	return nil
}
