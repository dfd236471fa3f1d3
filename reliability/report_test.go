package reliability

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/xlb-lb/xlb/testnet"
)

// record is one scenario's line in docs/RELIABILITY.md.
type record struct {
	Name       string
	Impairment string
	Forwarding string
	Requests   int
	Bytes      int64
	Failures   int
	Took       time.Duration
	Link       string // what the links did
	Outcome    string // pass, FAIL, or skipped: why
}

var (
	recordsMu sync.Mutex
	records   []record
)

// record starts the test's line in the report: named after the test, with
// the impairment told and tp's forwarding. The test fills in what it saw
// (fill); the line is added when the test ends, its outcome pass unless the
// test failed.
func (tp *topo) record(impairment string) *record {
	t := tp.t
	rec := &record{Name: t.Name(), Impairment: impairment, Forwarding: forwardingName(tp.routed)}
	t.Cleanup(func() {
		rec.Outcome = "FAIL"
		if !t.Failed() {
			rec.Outcome = "pass"
		}
		recordsMu.Lock()
		defer recordsMu.Unlock()
		records = append(records, *rec)
	})
	return rec
}

// fill records what the clients saw and what the links did.
func (rec *record) fill(res result, link testnet.Stats) {
	rec.Requests, rec.Bytes, rec.Failures, rec.Took, rec.Link = res.requests, res.bytes, len(res.failures), res.took, linkSummary(link)
}

// writeReport writes the records as Markdown.
func writeReport(path string) error {
	recordsMu.Lock()
	defer recordsMu.Unlock()
	sort.SliceStable(records, func(i, j int) bool { return records[i].Name < records[j].Name })
	var b strings.Builder
	mode := "short"
	if long {
		mode = "long"
	}
	fmt.Fprintf(&b, "# xlb reliability\n\n")
	fmt.Fprintf(&b, "Written by `make reliability` (%s scenarios, %s). Topology: client, load\n", mode, time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(&b, "balancer and worker hosts as network namespaces joined by TAP links through\n")
	fmt.Fprintf(&b, "the seeded impairment forwarder of `testnet` (every direction of both links\n")
	fmt.Fprintf(&b, "impaired alike). Every body is checked byte for byte and by SHA-256; bytes\n")
	fmt.Fprintf(&b, "are response bodies verified. Source: `reliability/`.\n\n")
	fmt.Fprintf(&b, "| scenario | impairment | forwarding | requests | bytes verified | failures | duration | links (all directions) | outcome |\n")
	fmt.Fprintf(&b, "| --- | --- | --- | ---: | ---: | ---: | ---: | --- | --- |\n")
	for _, r := range records {
		fmt.Fprintf(&b, "| %s | %s | %s | %d | %d | %d | %.1fs | %s | %s |\n",
			r.Name, r.Impairment, r.Forwarding, r.Requests, r.Bytes, r.Failures, r.Took.Seconds(), r.Link, r.Outcome)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}
