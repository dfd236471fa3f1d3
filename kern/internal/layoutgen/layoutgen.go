// Package layoutgen writes kern/zlayout.go, the Go side of the layouts the
// data plane shares with user space, from two sources that each have one
// author: the data plane object's BTF (what clang laid out from structs.h:
// sizes, offsets, member types, enum values) and kern's hand-written Go types
// (names, field types, methods). It matches the two member by member and
// emits, for each struct, its size constant and an encode and a decode method
// at fixed offsets; for each enum, its constants. Anything it cannot match is
// an error that says which side to change: a C member without a Go field, a Go
// field without a C member, a Go integer narrower than its C member, a struct
// or enum of the anchor (kern/bpf/anchors.h) that the tables below do not
// name, or the reverse.
//
// Matching rules, C member to Go field (names compared lower case without
// underscores, so peer_wscale is PeerWScale):
//   - pad, pad2, ...: no Go field; zero when encoded;
//   - an integer, host order or __be16/__be32/__be64 (network order): a Go
//     field of an integer type at least as wide (kern's own named types too);
//   - a struct of the table: a field of its Go type (its encode and decode);
//   - X_addr (__be32[4]) and X_port (__be16): a netip.AddrPort field X (for
//     a Go type that is itself a netip.AddrPort, addr and port);
//   - X_addr alone: a netip.Addr field XAddr;
//   - family: no Go field; the family of the struct's first address (0 for
//     none) when encoded, the family its addresses are decoded with (structs
//     without one hold IPv4 addresses).
//
// The generated code calls three helpers kern writes by hand: putAddr,
// addrFrom and addrFamily, and uses kern's ne (binary.NativeEndian). What an
// encoding means beyond its layout (only IPv4 legs, a zero key in an event)
// is for kern's MarshalBinary and UnmarshalBinary methods, which wrap these.
package layoutgen

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"go/ast"
	"go/format"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/xlb-lb/xlb/ebpf"
)

// Anchor is the struct of kern/bpf/anchors.h with a member of each struct
// and enum shared with user space.
const Anchor = "xlb_shared"

// structSpec maps a struct of structs.h to the Go type that mirrors it. Its
// size constant is the Go name + "Size".
type structSpec struct {
	c, goName string
	perCPU    bool // a value of a per-CPU map: also an add method, summing one CPU's value
}

var structs = []structSpec{
	{c: "leg_key", goName: "LegKey"},
	{c: "leg", goName: "Leg"},
	{c: "binding", goName: "Binding"},
	{c: "handshake", goName: "Handshake"},
	{c: "endpoint", goName: "Endpoint"},
	{c: "worker_info", goName: "WorkerInfo"},
	{c: "worker_cfg", goName: "WorkerCfg"},
	{c: "worker_load", goName: "WorkerLoad"},
	{c: "worker_stats", goName: "WorkerStats", perCPU: true},
	{c: "xlb_config", goName: "Config"},
	{c: "ctl_msg", goName: "CtlMsg"},
	{c: "ctl_item", goName: "CtlItem"},
	{c: "xlb_event", goName: "Event"},
	{c: "cooling", goName: "CoolingEntry"},
	{c: "held_hdr", goName: "HeldHeader"},
	{c: "req_record", goName: "ReqRecord"},
}

// enumSpec maps an enum of structs.h to Go constants: cPrefix is cut from
// each C name, the rest camel-cased (see acronyms) after goPrefix:
// LEG_OPT_WSCALE with "LEG_OPT_" and "Opt" is OptWScale.
type enumSpec struct {
	c                 string
	goType            string // the constants' Go type; "" for untyped constants
	cPrefix, goPrefix string
	// count, if set, names a Go constant one past the largest value (for
	// an array indexed by value) that C does not have.
	count string
	// names, if set, names a Go array of the values' names, lower case
	// without cPrefix, sized by the value named <goPrefix>Max (left out).
	names string
}

var enums = []enumSpec{
	{c: "xlb_counter", goType: "Counter", cPrefix: "XLB_CNT_", goPrefix: "Counter", names: "counterNames"},
	{c: "leg_kind", goType: "LegKind", cPrefix: "LEG_", goPrefix: "Leg"},
	{c: "leg_state", goType: "LegState", cPrefix: "LEG_", goPrefix: "Leg"},
	{c: "leg_opt", cPrefix: "LEG_OPT_", goPrefix: "Opt"},
	{c: "leg_rx_flag", cPrefix: "LEG_RX_", goPrefix: "Rx"},
	{c: "xlb_proto", goType: "Proto", cPrefix: "PROTO_", goPrefix: "Proto"},
	{c: "pin_reason", goType: "PinReason", cPrefix: "PIN_", goPrefix: "Pin", count: "PinMax"},
	{c: "leg_tail", cPrefix: "TAIL_", goPrefix: "Tail"},
	{c: "binding_flag", cPrefix: "BIND_", goPrefix: "Bind"},
	{c: "worker_flag", cPrefix: "WORKER_", goPrefix: "Worker"},
	{c: "cfg_protocol", goType: "Protocol", cPrefix: "CFG_PROTO_", goPrefix: "Protocol"},
	{c: "config_flag", cPrefix: "CFG_", goPrefix: "Config"},
	{c: "hs_flag", cPrefix: "HS_", goPrefix: "HS"},
	{c: "xlb_policy", goType: "Policy", cPrefix: "POLICY_", goPrefix: "Policy"},
	{c: "ctl_op", goType: "CtlOp", cPrefix: "CTL_", goPrefix: "Ctl"},
	{c: "ctl_done", cPrefix: "CTL_", goPrefix: "Ctl"},
	{c: "event_type", goType: "EventType", cPrefix: "EV_", goPrefix: "Event"},
	{c: "req_end", goType: "ReqEnd", cPrefix: "REQ_END_", goPrefix: "ReqEnd"},
}

// acronyms are the words of C names that Go spells otherwise than
// capitalised (SYN stays Syn: CounterSyn).
var acronyms = map[string]string{
	"ACK": "ACK", "CRLF": "CRLF", "FIB": "FIB", "FIN": "FIN", "HS": "HS", "HTTP": "HTTP", "IPV4": "IPv4",
	"JIQ": "JIQ", "PSH": "PSH", "RESP": "RESP", "RR": "RR", "RST": "RST", "SACK": "SACK", "TCP": "TCP",
	"TLS": "TLS", "TS": "TS", "TX": "TX", "WSCALE": "WScale",
}

// goConst is the Go name of constant name of enum e.
func (e *enumSpec) goConst(name string) (string, error) {
	rest, ok := strings.CutPrefix(name, e.cPrefix)
	if !ok || rest == "" {
		return "", fmt.Errorf("enum %s: %s does not start with %s", e.c, name, e.cPrefix)
	}
	var b strings.Builder
	b.WriteString(e.goPrefix)
	for w := range strings.SplitSeq(rest, "_") {
		if w == "" {
			return "", fmt.Errorf("enum %s: %s: empty word", e.c, name)
		}
		if a, ok := acronyms[w]; ok {
			b.WriteString(a)
			continue
		}
		b.WriteString(w[:1] + strings.ToLower(w[1:]))
	}
	return b.String(), nil
}

// GoSources reads the Go files of the package in dir that the generator
// reads types from: every .go file but tests and the generated file out.
func GoSources(dir, out string) (map[string][]byte, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		return nil, err
	}
	src := map[string][]byte{}
	for _, p := range paths {
		name := filepath.Base(p)
		if strings.HasSuffix(name, "_test.go") || name == filepath.Base(out) {
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		src[name] = b
	}
	if len(src) == 0 {
		return nil, fmt.Errorf("no Go files in %s", dir)
	}
	return src, nil
}

// ObjectBTF parses the .BTF section of an ELF object.
func ObjectBTF(obj []byte) (*ebpf.BTF, error) {
	f, err := elf.NewFile(bytes.NewReader(obj))
	if err != nil {
		return nil, err
	}
	sec := f.Section(".BTF")
	if sec == nil {
		return nil, errors.New("the object has no .BTF section (build it with clang -g)")
	}
	raw, err := sec.Data()
	if err != nil {
		return nil, fmt.Errorf(".BTF: %w", err)
	}
	return ebpf.ParseBTF(raw)
}

// Generate returns the formatted source of zlayout.go for the object obj and
// the Go files src of package pkg (file name to contents, see GoSources).
// objName is how the header names the object.
func Generate(obj []byte, objName, pkg string, src map[string][]byte) ([]byte, error) {
	btf, err := ObjectBTF(obj)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", objName, err)
	}
	g := &gen{btf: btf, goTypes: map[string]ast.Expr{}, cStructs: map[string]*structSpec{}}
	if err := g.parseGo(src); err != nil {
		return nil, err
	}
	for i := range structs {
		g.cStructs[structs[i].c] = &structs[i]
	}
	if err := g.checkAnchor(); err != nil {
		return nil, fmt.Errorf("%s: %w", objName, err)
	}
	if err := g.sizes(); err != nil {
		return nil, err
	}
	for i := range enums {
		if err := g.enum(&enums[i]); err != nil {
			return nil, err
		}
	}
	for i := range structs {
		if err := g.structCode(&structs[i]); err != nil {
			return nil, err
		}
	}
	var file bytes.Buffer
	fmt.Fprintf(&file, "// Code generated by kern/gen from the BTF of %s and the Go types of package %s; DO NOT EDIT.\n\n", objName, pkg)
	fmt.Fprintf(&file, "package %s\n\nimport (\n", pkg)
	for _, imp := range []string{"encoding/binary", "net/netip"} {
		if bytes.Contains(g.out.Bytes(), []byte(imp[strings.LastIndex(imp, "/")+1:]+".")) {
			fmt.Fprintf(&file, "\t%q\n", imp)
		}
	}
	file.WriteString(")\n\n")
	file.Write(g.out.Bytes())
	out, err := format.Source(file.Bytes())
	if err != nil {
		return nil, fmt.Errorf("generated code does not parse (a bug of layoutgen): %w\n%s", err, file.Bytes())
	}
	return out, nil
}

type gen struct {
	btf      *ebpf.BTF
	goTypes  map[string]ast.Expr // kern's type declarations, by name
	cStructs map[string]*structSpec
	out      bytes.Buffer
}

func (g *gen) printf(format string, args ...any) { fmt.Fprintf(&g.out, format, args...) }

func (g *gen) parseGo(src map[string][]byte) error {
	fset := token.NewFileSet()
	names := make([]string, 0, len(src))
	for n := range src {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		f, err := parser.ParseFile(fset, n, src[n], parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		for _, d := range f.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || gd.Tok != token.TYPE {
				continue
			}
			for _, s := range gd.Specs {
				ts := s.(*ast.TypeSpec)
				g.goTypes[ts.Name.Name] = ts.Type
			}
		}
	}
	return nil
}

// checkAnchor checks that the anchor names exactly the structs and enums of
// the tables.
func (g *gen) checkAnchor() error {
	a, err := g.btf.TypeByName(ebpf.KindStruct, Anchor)
	if err != nil {
		return fmt.Errorf("no struct %s in the BTF (kern/bpf/anchors.h, included by xlb.c, puts the shared layouts there): %w", Anchor, err)
	}
	anchored := map[string]bool{}
	for _, m := range a.Members {
		t, _, err := g.resolve(m.Type)
		if err != nil {
			return fmt.Errorf("struct %s member %s: %w", Anchor, m.Name, err)
		}
		switch t.Kind {
		case ebpf.KindStruct:
			anchored["struct "+t.Name] = true
		case ebpf.KindEnum, ebpf.KindEnum64:
			anchored["enum "+t.Name] = true
		default:
			return fmt.Errorf("struct %s member %s: a %s, not a struct or an enum", Anchor, m.Name, t.Kind)
		}
	}
	tabled := map[string]bool{}
	for _, s := range structs {
		tabled["struct "+s.c] = true
	}
	for _, e := range enums {
		tabled["enum "+e.c] = true
	}
	var errs []error
	for _, n := range sortedKeys(anchored) {
		if !tabled[n] {
			errs = append(errs, fmt.Errorf("%s is anchored in struct %s but has no Go mirror: add it to the tables of kern/internal/layoutgen", n, Anchor))
		}
	}
	for _, n := range sortedKeys(tabled) {
		if !anchored[n] {
			errs = append(errs, fmt.Errorf("%s has a Go mirror but is not in struct %s: add a member for it to kern/bpf/anchors.h", n, Anchor))
		}
	}
	return errors.Join(errs...)
}

func sortedKeys[V any](m map[string]V) []string {
	k := make([]string, 0, len(m))
	for n := range m {
		k = append(k, n)
	}
	sort.Strings(k)
	return k
}

// resolve follows typedefs and qualifiers from id; be says a typedef on the
// way is a network-order one (__be16, __be32, __be64).
func (g *gen) resolve(id ebpf.TypeID) (t *ebpf.BTFType, be bool, err error) {
	for range 32 {
		if t, err = g.btf.TypeByID(id); err != nil {
			return nil, false, err
		}
		switch t.Kind {
		case ebpf.KindTypedef, ebpf.KindConst, ebpf.KindVolatile, ebpf.KindRestrict, ebpf.KindTypeTag:
			if strings.HasPrefix(t.Name, "__be") {
				be = true
			}
			id = t.Type
		default:
			return t, be, nil
		}
	}
	return nil, false, fmt.Errorf("type %d: too many typedefs", id)
}

func (g *gen) sizes() error {
	g.printf("// Sizes of the structs of structs.h.\nconst (\n")
	for _, s := range structs {
		t, err := g.btf.TypeByName(ebpf.KindStruct, s.c)
		if err != nil {
			return err
		}
		g.printf("\t%sSize = %d // sizeof(struct %s)\n", s.goName, t.Size, s.c)
	}
	g.printf(")\n\n")
	return nil
}

func (g *gen) enum(e *enumSpec) error {
	t, err := g.btf.TypeByName(ebpf.KindEnum, e.c)
	if err != nil {
		if t, err = g.btf.TypeByName(ebpf.KindEnum64, e.c); err != nil {
			return err
		}
	}
	var gt goType
	if e.goType != "" {
		if gt, err = g.goType(&ast.Ident{Name: e.goType}); err != nil {
			return fmt.Errorf("enum %s: %w", e.c, err)
		}
		if gt.kind != goInt {
			return fmt.Errorf("enum %s: Go type %s is not an integer", e.c, e.goType)
		}
	}
	typ := ""
	if e.goType != "" {
		typ = " " + e.goType
	}
	g.printf("// Values of enum %s.\nconst (\n", e.c)
	maxV, maxName := uint64(0), ""
	var named []string
	maxConst := ""
	for _, v := range t.Values {
		name, err := e.goConst(v.Name)
		if err != nil {
			return err
		}
		if t.KindFlag && int64(v.Value) < 0 {
			return fmt.Errorf("enum %s: %s is negative", e.c, v.Name)
		}
		if e.goType != "" && gt.size < 8 && v.Value >= 1<<(8*gt.size) {
			return fmt.Errorf("enum %s: %s = %d does not fit Go type %s", e.c, v.Name, v.Value, e.goType)
		}
		g.printf("\t%s%s = %d // %s\n", name, typ, v.Value, v.Name)
		if v.Value >= maxV {
			maxV, maxName = v.Value, v.Name
		}
		if e.names != "" {
			if strings.TrimPrefix(v.Name, e.cPrefix) == "MAX" {
				maxConst = name
				continue
			}
			named = append(named, fmt.Sprintf("\t%s: %q,\n", name, strings.ToLower(strings.TrimPrefix(v.Name, e.cPrefix))))
		}
	}
	if e.count != "" {
		g.printf("\t%s%s = %d // one past %s\n", e.count, typ, maxV+1, maxName)
	}
	g.printf(")\n\n")
	if e.names != "" {
		if maxConst == "" {
			return fmt.Errorf("enum %s: no %sMAX to size %s with", e.c, e.cPrefix, e.names)
		}
		g.printf("// %s are the names of enum %s's values: lower case, without %s.\n", e.names, e.c, e.cPrefix)
		g.printf("var %s = [%s]string{\n%s}\n\n", e.names, maxConst, strings.Join(named, ""))
	}
	return nil
}

// Kinds of Go field types the generator handles.
const (
	goInt = iota + 1
	goStruct
	goAddr
	goAddrPort
)

type goType struct {
	kind   int
	name   string // as written: uint32, LegState, LegKey, netip.Addr
	size   int    // goInt: bytes
	signed bool   // goInt
}

var goInts = map[string]struct {
	size   int
	signed bool
}{
	"uint8": {1, false}, "byte": {1, false}, "uint16": {2, false}, "uint32": {4, false}, "uint64": {8, false},
	"int8": {1, true}, "int16": {2, true}, "int32": {4, true}, "int64": {8, true},
}

// goType resolves a Go type expression of kern.
func (g *gen) goType(e ast.Expr) (goType, error) {
	name := ""
	for range 16 {
		switch x := e.(type) {
		case *ast.Ident:
			if name == "" {
				name = x.Name
			}
			if in, ok := goInts[x.Name]; ok {
				return goType{kind: goInt, name: name, size: in.size, signed: in.signed}, nil
			}
			decl, ok := g.goTypes[x.Name]
			if !ok {
				return goType{}, fmt.Errorf("type %s: not an integer of fixed size, and not declared in the package", x.Name)
			}
			if _, ok := decl.(*ast.StructType); ok {
				return goType{kind: goStruct, name: name}, nil
			}
			e = decl
		case *ast.SelectorExpr:
			if pkg, ok := x.X.(*ast.Ident); ok && pkg.Name == "netip" {
				if name == "" {
					name = "netip." + x.Sel.Name
				}
				switch x.Sel.Name {
				case "Addr":
					return goType{kind: goAddr, name: name}, nil
				case "AddrPort":
					return goType{kind: goAddrPort, name: name}, nil
				}
			}
			return goType{}, fmt.Errorf("type %s: not supported", exprString(x))
		default:
			return goType{}, fmt.Errorf("type %s: not supported", exprString(x))
		}
	}
	return goType{}, fmt.Errorf("type %s: too many levels", name)
}

func exprString(e ast.Expr) string {
	var b bytes.Buffer
	format.Node(&b, token.NewFileSet(), e)
	return b.String()
}

// goField is a field of a Go type, or the value itself (name "") for a
// type that is not a struct (Endpoint, a netip.AddrPort).
type goField struct {
	name string
	typ  goType
	used bool
}

func (f *goField) norm() string { return norm(f.name) }

func norm(s string) string { return strings.ToLower(strings.ReplaceAll(s, "_", "")) }

// goFields lists the fields of Go type name.
func (g *gen) goFields(name string) ([]*goField, error) {
	decl, ok := g.goTypes[name]
	if !ok {
		return nil, fmt.Errorf("Go type %s is not declared in the package", name)
	}
	st, ok := decl.(*ast.StructType)
	if !ok {
		t, err := g.goType(&ast.Ident{Name: name})
		if err != nil {
			return nil, err
		}
		if t.kind != goAddrPort {
			return nil, fmt.Errorf("Go type %s: a struct or a netip.AddrPort", name)
		}
		return []*goField{{name: "", typ: t}}, nil
	}
	var fs []*goField
	for _, f := range st.Fields.List {
		if len(f.Names) == 0 {
			return nil, fmt.Errorf("Go type %s: embedded field %s not supported", name, exprString(f.Type))
		}
		t, err := g.goType(f.Type)
		if err != nil {
			return nil, fmt.Errorf("Go type %s: %w", name, err)
		}
		for _, n := range f.Names {
			fs = append(fs, &goField{name: n.Name, typ: t})
		}
	}
	return fs, nil
}

var padName = regexp.MustCompile(`^pad[0-9]*$`)

// cMember is a member of a C struct, with what it resolves to.
type cMember struct {
	name      string
	off, size uint32
	t         *ebpf.BTFType // after typedefs
	be        bool          // network order
	claimed   bool
}

// isAddr says m is an address: __be32[4].
func (g *gen) isAddr(m *cMember) bool {
	if m.t.Kind != ebpf.KindArray || m.size != 16 {
		return false
	}
	el, be, err := g.resolve(m.t.ElemType)
	return err == nil && be && el.Kind == ebpf.KindInt && el.Size == 4
}

func (g *gen) isInt(m *cMember) bool {
	return m.t.Kind == ebpf.KindInt || m.t.Kind == ebpf.KindEnum || m.t.Kind == ebpf.KindEnum64
}

func (g *gen) structCode(s *structSpec) error {
	t, err := g.btf.TypeByName(ebpf.KindStruct, s.c)
	if err != nil {
		return err
	}
	where := fmt.Sprintf("struct %s (Go %s)", s.c, s.goName)
	fields, err := g.goFields(s.goName)
	if err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}
	var members []*cMember
	byName := map[string]*cMember{}
	for _, m := range t.Members {
		if m.BitfieldSize != 0 || m.BitOffset%8 != 0 {
			return fmt.Errorf("%s: member %s is a bitfield", where, m.Name)
		}
		if m.Name == "" {
			return fmt.Errorf("%s: anonymous members are not supported", where)
		}
		rt, be, err := g.resolve(m.Type)
		if err != nil {
			return fmt.Errorf("%s: member %s: %w", where, m.Name, err)
		}
		size, err := g.btf.Sizeof(m.Type)
		if err != nil {
			return fmt.Errorf("%s: member %s: %w", where, m.Name, err)
		}
		cm := &cMember{name: m.Name, off: m.BitOffset / 8, size: size, t: rt, be: be}
		members = append(members, cm)
		byName[norm(m.Name)] = cm
	}
	// v is the receiver; val and set read and write a field of it.
	val := func(f *goField) string {
		if f.name == "" {
			return "netip.AddrPort(*v)"
		}
		return "v." + f.name
	}
	set := func(f *goField, x string) string {
		if f.name == "" {
			return fmt.Sprintf("*v = %s(%s)", s.goName, x)
		}
		return fmt.Sprintf("v.%s = %s", f.name, x)
	}
	family := "afInet" // how addresses decode without a family member
	if fm, ok := byName["family"]; ok && g.isInt(fm) && fm.size == 1 {
		if _, isField := fieldByNorm(fields, "family"); !isField {
			family = fmt.Sprintf("b[%d]", fm.off)
		}
	}
	var enc, dec, add []string
	firstAddr := ""
	// Addresses with ports first: they claim two members each.
	for _, f := range fields {
		if f.typ.kind != goAddrPort {
			continue
		}
		am, pm := byName[f.norm()+"addr"], byName[f.norm()+"port"]
		if am == nil || pm == nil || !g.isAddr(am) || !g.isInt(pm) || pm.size != 2 || !pm.be {
			return fmt.Errorf("%s: netip.AddrPort field %s needs members %s (__be32[4]) and %s (__be16)",
				where, f.name, cJoin(f.name, "addr"), cJoin(f.name, "port"))
		}
		am.claimed, pm.claimed, f.used = true, true, true
		if firstAddr == "" {
			firstAddr = val(f) + ".Addr()"
		}
		enc = append(enc,
			fmt.Sprintf("putAddr(b[%d:%d], %s.Addr())", am.off, am.off+16, val(f)),
			fmt.Sprintf("binary.BigEndian.PutUint16(b[%d:], %s.Port())", pm.off, val(f)))
		dec = append(dec, set(f, fmt.Sprintf("netip.AddrPortFrom(addrFrom(b[%d:%d], %s), binary.BigEndian.Uint16(b[%d:]))",
			am.off, am.off+16, family, pm.off)))
	}
	for _, m := range members {
		if m.claimed {
			continue
		}
		if padName.MatchString(m.name) {
			enc = append(enc, fmt.Sprintf("clear(b[%d:%d])", m.off, m.off+m.size))
			continue
		}
		f, ok := fieldByNorm(fields, m.name)
		if !ok && m.name == "family" && g.isInt(m) && m.size == 1 {
			continue // written below, once the first address is known
		}
		if !ok {
			return fmt.Errorf("%s: member %s has no Go field (name one %s, or the member pad)", where, m.name, goCamel(m.name))
		}
		if f.used {
			return fmt.Errorf("%s: member %s: Go field %s already holds another member", where, m.name, f.name)
		}
		f.used = true
		switch {
		case g.isInt(m) && f.typ.kind == goInt:
			e, d, a, err := intCode(m, f, val(f))
			if err != nil {
				return fmt.Errorf("%s: member %s: %w", where, m.name, err)
			}
			enc, dec = append(enc, e), append(dec, set(f, d))
			if a != "" {
				add = append(add, a)
			}
		case m.t.Kind == ebpf.KindStruct && f.typ.kind == goStruct:
			ns, ok := g.cStructs[m.t.Name]
			if !ok || ns.goName != f.typ.name {
				return fmt.Errorf("%s: member %s is a struct %s, Go field %s a %s (the mirror of struct %s is %s)",
					where, m.name, m.t.Name, f.name, f.typ.name, m.t.Name, mirrorName(ns))
			}
			enc = append(enc, fmt.Sprintf("%s.encode(b[%d:%d])", val(f), m.off, m.off+m.size))
			dec = append(dec, fmt.Sprintf("%s.decode(b[%d:%d])", val(f), m.off, m.off+m.size))
		case g.isAddr(m) && f.typ.kind == goAddr:
			if firstAddr == "" {
				firstAddr = val(f)
			}
			enc = append(enc, fmt.Sprintf("putAddr(b[%d:%d], %s)", m.off, m.off+16, val(f)))
			dec = append(dec, set(f, fmt.Sprintf("addrFrom(b[%d:%d], %s)", m.off, m.off+16, family)))
		default:
			return fmt.Errorf("%s: member %s (%s, %d bytes) cannot hold Go field %s (%s)", where, m.name, m.t.Kind, m.size, f.name, f.typ.name)
		}
	}
	if fm, ok := byName["family"]; ok && !fm.claimed && strings.HasPrefix(family, "b[") {
		if firstAddr == "" {
			return fmt.Errorf("%s: member family, but no address member", where)
		}
		enc = append(enc, fmt.Sprintf("b[%d] = addrFamily(%s)", fm.off, firstAddr))
	}
	for _, f := range fields {
		if !f.used {
			return fmt.Errorf("%s: Go field %s has no member in the C struct", where, f.name)
		}
	}
	sizeConst := s.goName + "Size"
	g.printf("// encode writes v as struct %s into b[:%s].\n", s.c, sizeConst)
	g.printf("func (v *%s) encode(b []byte) {\n\t_ = b[%s-1]\n\t%s\n}\n\n", s.goName, sizeConst, strings.Join(enc, "\n\t"))
	g.printf("// decode reads v from struct %s in b[:%s].\n", s.c, sizeConst)
	g.printf("func (v *%s) decode(b []byte) {\n\t_ = b[%s-1]\n\t%s\n}\n\n", s.goName, sizeConst, strings.Join(dec, "\n\t"))
	if s.perCPU {
		if len(add) != len(dec) {
			return fmt.Errorf("%s: a per-CPU value must hold integers only, to be summed", where)
		}
		g.printf("// add adds one CPU's struct %s in b[:%s] to v.\n", s.c, sizeConst)
		g.printf("func (v *%s) add(b []byte) {\n\t_ = b[%s-1]\n\t%s\n}\n\n", s.goName, sizeConst, strings.Join(add, "\n\t"))
	}
	return nil
}

func mirrorName(s *structSpec) string {
	if s == nil {
		return "none"
	}
	return s.goName
}

func fieldByNorm(fs []*goField, cName string) (*goField, bool) {
	i := slices.IndexFunc(fs, func(f *goField) bool { return f.name != "" && f.norm() == norm(cName) })
	if i < 0 {
		return nil, false
	}
	return fs[i], true
}

// cJoin is the C member name of part of Go field f: peer_addr for Peer.
func cJoin(f, part string) string {
	if f == "" {
		return part
	}
	var b strings.Builder
	for i, r := range f {
		if i > 0 && r >= 'A' && r <= 'Z' {
			b.WriteByte('_')
		}
		b.WriteRune(r)
	}
	return strings.ToLower(b.String()) + "_" + part
}

// goCamel suggests a Go field name for a C member.
func goCamel(c string) string {
	var b strings.Builder
	for w := range strings.SplitSeq(c, "_") {
		if w != "" {
			b.WriteString(strings.ToUpper(w[:1]) + w[1:])
		}
	}
	return b.String()
}

// intCode is the encode, decode and add code of an integer member m held by
// Go field f (value expression x).
func intCode(m *cMember, f *goField, x string) (enc, dec, add string, err error) {
	if m.size != 1 && m.size != 2 && m.size != 4 && m.size != 8 {
		return "", "", "", fmt.Errorf("%d-byte integer", m.size)
	}
	if f.typ.size < int(m.size) {
		return "", "", "", fmt.Errorf("Go field %s (%s, %d bytes) is narrower than the member (%d bytes)", f.name, f.typ.name, f.typ.size, m.size)
	}
	signed := m.t.Kind == ebpf.KindInt && m.t.IntEncoding&1 != 0 || m.t.Kind != ebpf.KindInt && m.t.KindFlag
	if signed && !f.typ.signed && f.typ.size > int(m.size) {
		return "", "", "", fmt.Errorf("Go field %s (%s) is unsigned and wider than the signed member: its sign would be lost", f.name, f.typ.name)
	}
	bits := 8 * m.size
	u := fmt.Sprintf("uint%d", bits)
	order := "ne"
	if m.be {
		order = "binary.BigEndian"
	}
	// encode
	v := x
	if f.typ.name != u {
		v = fmt.Sprintf("%s(%s)", u, x)
	}
	var raw string
	if m.size == 1 {
		enc = fmt.Sprintf("b[%d] = %s", m.off, v)
		raw = fmt.Sprintf("b[%d]", m.off)
	} else {
		enc = fmt.Sprintf("%s.PutUint%d(b[%d:], %s)", order, bits, m.off, v)
		raw = fmt.Sprintf("%s.Uint%d(b[%d:])", order, bits, m.off)
	}
	// decode: a wider signed Go field gets the C value sign-extended.
	d := raw
	if signed && f.typ.signed && f.typ.size > int(m.size) {
		d = fmt.Sprintf("int%d(%s)", bits, raw)
	}
	if f.typ.name != u || d != raw {
		d = fmt.Sprintf("%s(%s)", f.typ.name, d)
	}
	add = fmt.Sprintf("%s += %s", x, d)
	return enc, d, add, nil
}
