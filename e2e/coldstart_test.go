package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/xlb-lb/xlb/internal/testkit"
	"github.com/xlb-lb/xlb/splice/demo"
	"github.com/xlb-lb/xlb/testnet"
)

// TestStartUnderLoad: clients already knocking when xlb starts (a restart
// without --reuse under load) are refused until it is up, then served; none
// is accepted and then dropped. xlb used to listen before its data plane
// was attached: a client that connected in between reached a socket the
// data plane knew nothing of and was closed unanswered ("client connection
// without a leg"): run against the xlb of before the change, this test
// counted 4 such failures. Both ways of answering handshakes.
func TestStartUnderLoad(t *testing.T) {
	testnet.RequireRoot(t)
	for _, tc := range []struct {
		name  string
		flags []string
	}{
		{"data plane handshake", nil},
		{"kernel handshake", []string{"--handshake", "kernel"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := testnet.New(t)
			workers := startWorkers(t, ns, 2)

			const clients, maxTries = 4, 20000
			var ok, refused, failed atomic.Int64
			var firstErr atomic.Value
			stop := make(chan struct{})
			var wg sync.WaitGroup
			for range clients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range maxTries {
						select {
						case <-stop:
							return
						default:
						}
						switch err := requestOnce(ns, "127.0.0.1:8080"); {
						case err == nil:
							ok.Add(1)
						case errors.Is(err, syscall.ECONNREFUSED):
							refused.Add(1)
							time.Sleep(time.Millisecond)
						default:
							failed.Add(1)
							firstErr.CompareAndSwap(nil, err.Error())
						}
					}
				}()
			}
			// Let the clients be refused a while first, so that xlb's
			// start falls inside their loops.
			deadline := time.Now().Add(5 * time.Second)
			for refused.Load() < clients && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			lb := startXLB(t, ns, "lo", 8080, workers, append(testkit.OwnSocket(t), tc.flags...)...)
			served := ok.Load()
			for ok.Load() < served+200 && time.Now().Before(deadline.Add(10*time.Second)) {
				time.Sleep(10 * time.Millisecond)
			}
			close(stop)
			wg.Wait()
			st := testkit.Status(t, ns, "lo")
			lb.Stop()

			t.Logf("%d requests answered, %d connections refused before xlb listened, %d failed", ok.Load(), refused.Load(), failed.Load())
			if refused.Load() == 0 {
				t.Errorf("no connection was refused: the clients did not start before xlb")
			}
			if ok.Load() < served+200 {
				t.Errorf("%d requests answered once xlb was up, want 200", ok.Load()-served)
			}
			if n := failed.Load(); n != 0 {
				t.Errorf("%d connections failed otherwise than refused while xlb started, the first: %v", n, firstErr.Load())
			}
			if st.Counters["bind"] == 0 {
				t.Errorf("counters %v: the requests did not go through the data plane", st.Counters)
			}
		})
	}
}

// requestOnce opens a connection in ns, sends one request and reads its
// answer.
func requestOnce(ns *testnet.NS, addr string) error {
	var c net.Conn
	err := ns.Do(func() error {
		var err error
		c, err = net.DialTimeout("tcp4", addr, 2*time.Second)
		return err
	})
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := demo.Get(c, bufio.NewReader(c), "/bytes/100"); err != nil {
		return fmt.Errorf("request: %w", err)
	}
	return nil
}
