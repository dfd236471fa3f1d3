package reliability

// Real protocols that break the three rules of DESIGN.md (TLS, HTTP and
// Redis pipelines) through xlb on the routed topology, every link direction
// impaired: every byte checked, as in the e2e protocol tests.

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xlb-lb/xlb/internal/testkit"
	"github.com/xlb-lb/xlb/internal/testproto"
	"github.com/xlb-lb/xlb/splice/demo"
	"github.com/xlb-lb/xlb/testnet"
)

// protoImpairment is every protocol scenario's: loss, duplication and
// reordering at once.
func protoImpairment(seed uint64) testnet.Impairment {
	return testnet.Impairment{Drop: 0.02, Duplicate: 0.01, Reorder: 0.05, Seed: seed}
}

// nginxServers starts nginx workers serving root (with TLS when cert is
// set); each says who it is in X-Worker.
func nginxServers(root, cert, key string) func(testing.TB, *testnet.NS, []string) {
	return func(t testing.TB, w *testnet.NS, addrs []string) {
		for _, a := range addrs {
			n := testproto.Nginx{Dir: t.TempDir(), Listen: a, Root: root, Cert: cert, Key: key,
				Server: "add_header X-Worker $server_addr:$server_port always;"}
			args, err := n.WriteConfig()
			if err != nil {
				t.Fatal(err)
			}
			testkit.Start(t, w, "nginx "+a, args...).WaitAccepts(w, a)
		}
	}
}

// redisServers starts redis-server workers.
func redisServers(t testing.TB, w *testnet.NS, addrs []string) {
	for _, a := range addrs {
		p := testkit.Start(t, w, "redis "+a, testproto.RedisArgs(a)...)
		p.WaitLines(testproto.RedisReady, 1, testkit.StartTimeout)
	}
}

// collector gathers a concurrent client's results.
type collector struct {
	mu  sync.Mutex
	res result
}

func (c *collector) ok(worker string, bytes int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.res.requests++
	c.res.bytes += int64(bytes)
	c.res.perWorker[worker]++
}

func (c *collector) fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.res.failures = append(c.res.failures, err)
}

// concurrently runs fn for each of n client connections dialled from C and
// returns what they saw.
func (tp *topo) concurrently(n int, fn func(i int, c net.Conn, col *collector)) result {
	col := &collector{res: result{perWorker: map[string]int{}}}
	var conns []net.Conn
	for i := 0; i < n; i++ {
		conns = append(conns, tp.dial())
	}
	start := time.Now()
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(i, c, col)
		}()
	}
	wg.Wait()
	col.res.took = time.Since(start)
	return col.res
}

// readBody reads one response and checks it is 200 with the file of that
// size; it returns the worker (X-Worker).
func readBody(r *bufio.Reader, size int) (string, error) {
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		return "", fmt.Errorf("/b%d: %w", size, err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return "", fmt.Errorf("/b%d: body after %d bytes: %w", size, len(body), err)
	}
	if resp.StatusCode != 200 || !bytes.Equal(body, demo.Body(size)) {
		return "", fmt.Errorf("/b%d: %s from %s, %d bytes, intact=%v", size, resp.Status, resp.Header.Get("X-Worker"), len(body), bytes.Equal(body, demo.Body(size)))
	}
	return resp.Header.Get("X-Worker"), nil
}

// TestTLSImpaired: TLS 1.3 and 1.2 keep-alive connections to three nginx
// TLS workers, every link direction dropping, duplicating and reordering.
func TestTLSImpaired(t *testing.T) {
	testkit.NeedTools(t, "nginx")
	cert, key, err := testproto.SelfSignedCert(t.TempDir(), workerAddr)
	if err != nil {
		t.Fatal(err)
	}
	sizes := []int{100, 16385, 100000, 300000}
	conns, requests := pick(4, 8), pick(10, 100)
	runScenario(t, scenario{
		imp:     protoImpairment(800),
		opts:    topoOpts{servers: nginxServers(testproto.WebRoot(t, sizes...), cert, key), flags: testkit.ProtoFlags()},
		want:    conns * requests,
		clients: conns,
		drive: func(tp *topo) result {
			return tp.concurrently(conns, func(i int, raw net.Conn, col *collector) {
				v := []uint16{tls.VersionTLS13, tls.VersionTLS12}[i%2]
				c := tls.Client(raw, &tls.Config{InsecureSkipVerify: true, ServerName: testproto.ServerName, MinVersion: v, MaxVersion: v})
				r := bufio.NewReaderSize(c, 64<<10)
				for j := 0; j < requests; j++ {
					n := sizes[(i+j)%len(sizes)]
					c.SetDeadline(time.Now().Add(requestTimeout))
					var w string
					_, err := fmt.Fprintf(c, "GET /b%d HTTP/1.1\r\nHost: %s\r\n\r\n", n, testproto.ServerName)
					if err == nil {
						w, err = readBody(r, n)
					}
					if err != nil {
						col.fail(fmt.Errorf("%s connection %d (%s) request %d: %w", tls.VersionName(v), i, raw.LocalAddr(), j, err))
						return
					}
					col.ok(w, n)
				}
			})
		},
	})
}

// pipelineBatch is 100 GETs of different files (up to 100 KB), each padded
// to 2 KB: 200 KB, far more than one flight.
func pipelineBatch() ([]byte, []int) {
	var b []byte
	var sizes []int
	pad := strings.Repeat("p", 2000)
	for i := 0; i < 100; i++ {
		n := 1 + i*1013 + i%7
		sizes = append(sizes, n)
		b = append(b, fmt.Sprintf("GET /b%d HTTP/1.1\r\nHost: xlb\r\nX-Request: %d\r\nX-Pad: %s\r\n\r\n", n, i, pad)...)
	}
	return b, sizes
}

// pipelinePiece is the size of the pieces a streamed batch is written in.
const pipelinePiece = 3001

// TestHTTPPipelineImpaired: connections to three nginx each send batches of
// 100 pipelined GETs and read the 100 responses in order, every link
// direction dropping, duplicating and reordering. Even batches are written
// at once; odd ones are streamed in pieces of 3001 bytes (cut anywhere in a
// request) 3 ms apart, the way a client sends requests as it thinks of
// them: the worker then answers every complete request before the next
// piece comes, the client acknowledges every answer, and the next piece
// starts in the middle of a request.
func TestHTTPPipelineImpaired(t *testing.T) {
	testkit.NeedTools(t, "nginx")
	batch, sizes := pipelineBatch()
	conns, rounds := pick(3, 6), pick(2, 6)
	runScenario(t, scenario{
		imp:     protoImpairment(900),
		opts:    topoOpts{servers: nginxServers(testproto.WebRoot(t, sizes...), "", ""), flags: testkit.ProtoFlags()},
		want:    conns * rounds * len(sizes),
		clients: conns,
		drive: func(tp *topo) result {
			return tp.concurrently(conns, func(i int, c net.Conn, col *collector) {
				r := bufio.NewReaderSize(c, 64<<10)
				for round := 0; round < rounds; round++ {
					c.SetDeadline(time.Now().Add(requestTimeout))
					werr := make(chan error, 1)
					go func() {
						if round%2 == 0 {
							_, err := c.Write(batch)
							werr <- err
							return
						}
						for k := 0; k < len(batch); k += pipelinePiece {
							if k > 0 {
								time.Sleep(3 * time.Millisecond) // the client's pace, not a wait for an event
							}
							if _, err := c.Write(batch[k:min(k+pipelinePiece, len(batch))]); err != nil {
								werr <- err
								return
							}
						}
						werr <- nil
					}()
					for j, n := range sizes {
						c.SetReadDeadline(time.Now().Add(requestTimeout))
						w, err := readBody(r, n)
						if err != nil {
							col.fail(fmt.Errorf("connection %d (%s) batch %d response %d: %w", i, c.LocalAddr(), round, j, err))
							c.Close()
							<-werr
							return
						}
						col.ok(w, n)
					}
					if err := <-werr; err != nil {
						col.fail(fmt.Errorf("connection %d batch %d: write: %w", i, round, err))
						return
					}
				}
			})
		},
	})
}

// TestRedisPipelineImpaired: connections to three redis-server each write
// batches of 50 SETs of 2.7 KB at once (135 KB), read the 50 replies, then
// send ECHO and PING one at a time; every link direction drops, duplicates
// and reorders. Afterwards, on each server directly: every batch landed
// whole on one server with every value intact.
func TestRedisPipelineImpaired(t *testing.T) {
	testkit.NeedTools(t, "redis-server")
	const keys, size = 50, 2700
	conns, rounds := pick(3, 6), pick(2, 10)
	value := func(prefix string, k int) string {
		p := fmt.Sprintf("%s%d:", prefix, k)
		return p + string(demo.Body(size + k)[len(p):size])
	}
	prefix := func(i, round int) string { return fmt.Sprintf("c%dr%d:", i, round) }
	echo := string(demo.Body(10000))
	var tp0 *topo
	runScenario(t, scenario{
		imp:     protoImpairment(1000),
		opts:    topoOpts{servers: redisServers, flags: testkit.ProtoFlags()},
		want:    conns * rounds * (keys + 2),
		clients: conns,
		drive: func(tp *topo) result {
			tp0 = tp
			return tp.concurrently(conns, func(i int, c net.Conn, col *collector) {
				r := bufio.NewReaderSize(c, 64<<10)
				for round := 0; round < rounds; round++ {
					var batch []byte
					for k := 0; k < keys; k++ {
						batch = append(batch, testproto.RESP("SET", fmt.Sprintf("%s%d", prefix(i, round), k), value(prefix(i, round), k))...)
					}
					c.SetDeadline(time.Now().Add(requestTimeout))
					werr := make(chan error, 1)
					go func() { _, err := c.Write(batch); werr <- err }()
					for k := 0; k < keys; k++ {
						rep, err := testproto.ReadReply(r)
						if err != nil || rep.Str != "OK" {
							col.fail(fmt.Errorf("connection %d (%s) batch %d: reply %d of %d: %v (%v), want +OK", i, c.LocalAddr(), round, k, keys, rep, err))
							c.Close()
							<-werr
							return
						}
						col.ok("", 5)
					}
					if err := <-werr; err != nil {
						col.fail(fmt.Errorf("connection %d batch %d: write: %w", i, round, err))
						return
					}
					for _, cmd := range [][]string{{"ECHO", echo}, {"PING"}} {
						c.SetDeadline(time.Now().Add(requestTimeout))
						c.Write(testproto.RESP(cmd...))
						rep, err := testproto.ReadReply(r)
						if err != nil || cmd[0] == "ECHO" && rep.Str != echo || cmd[0] == "PING" && rep.Str != "PONG" {
							col.fail(fmt.Errorf("connection %d (%s) after batch %d: %s: %v (%v)", i, c.LocalAddr(), round, cmd[0], rep, err))
							return
						}
						col.ok("", len(rep.Str))
					}
				}
			})
		},
	})
	if tp0 == nil || t.Failed() {
		return
	}
	// Where every batch landed, asked of each server directly.
	direct := make([]*bufio.ReadWriter, len(tp0.workerAddrs))
	for s, a := range tp0.workerAddrs {
		var c net.Conn
		if err := tp0.w.Do(func() (err error) { c, err = net.DialTimeout("tcp4", a, requestTimeout); return err }); err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(requestTimeout))
		direct[s] = bufio.NewReadWriter(bufio.NewReader(c), bufio.NewWriter(c))
	}
	do := func(s int, args ...string) testproto.Reply {
		direct[s].Write(testproto.RESP(args...))
		direct[s].Flush()
		rep, err := testproto.ReadReply(direct[s].Reader)
		if err != nil {
			t.Fatalf("%s on %s directly: %v", args[0], tp0.workerAddrs[s], err)
		}
		return rep
	}
	landed := map[string]int{}
	for i := 0; i < conns; i++ {
		for round := 0; round < rounds; round++ {
			p := prefix(i, round)
			var where []string
			owner := -1
			for s := range direct {
				ks := do(s, "KEYS", p+"*").Elems
				if len(ks) == keys {
					owner = s
				}
				if len(ks) > 0 {
					where = append(where, fmt.Sprintf("%s has %d", tp0.workerAddrs[s], len(ks)))
				}
			}
			if owner < 0 || len(where) != 1 {
				t.Errorf("batch %s did not land whole on one server: %s", p, strings.Join(where, ", "))
				continue
			}
			for k := 0; k < keys; k++ {
				if rep := do(owner, "GET", fmt.Sprintf("%s%d", p, k)); rep.Str != value(p, k) {
					t.Errorf("batch %s: %s holds %v for key %d, not its value", p, tp0.workerAddrs[owner], rep, k)
					break
				}
			}
			landed[tp0.workerAddrs[owner]]++
		}
	}
	t.Logf("batches per server: %v", landed)
}
