//go:build xlbtest

package splice

import (
	"fmt"
	"net"
	"os"
	"time"
)

// Failures injected into a takeover by the tests of its failure paths
// (e2e/handover_test.go), through the environment of a binary built with
// the xlbtest tag. A production build has none of this (fault.go).
const (
	// faultEnv names the failure the new process meets:
	//   fail-before-swap  it gives up after the old process said go, just
	//                     before the program swap (everything else done);
	//   stall             it stalls before saying it is ready until the old
	//                     process gave up waiting, then carries on;
	//   exit-after-swap   it dies right after the swap, before telling the
	//                     old process (no teardown, no answer).
	faultEnv = "XLB_TEST_HANDOVER_FAULT"
	// timeoutEnv replaces handoverTimeout in the old process (a Go
	// duration), so that a stalled takeover outlasts it quickly.
	timeoutEnv = "XLB_TEST_HANDOVER_TIMEOUT"
)

func handoverHook(point hookPoint, c *net.UnixConn) error {
	fault := os.Getenv(faultEnv)
	switch {
	case fault == "fail-before-swap" && point == hookBeforeSwap:
		return fmt.Errorf("injected failure before the program swap (%s=%s)", faultEnv, fault)
	case fault == "stall" && point == hookBeforeReady:
		// The old process's timeout is the event to wait for: it says so
		// (its abort) or closes the connection. Bounded by the deadline.
		c.SetReadDeadline(time.Now().Add(2 * controlTimeout))
		var abort handoverAck
		readMsg(c, &abort)
		return nil // and carry on, as a takeover that was only slow would
	case fault == "exit-after-swap" && point == hookAfterSwap:
		fmt.Fprintf(os.Stderr, "injected exit after the program swap (%s=%s)\n", faultEnv, fault)
		os.Exit(3)
	}
	return nil
}

func handoverTimeout() time.Duration {
	if d, err := time.ParseDuration(os.Getenv(timeoutEnv)); err == nil && d > 0 {
		return d
	}
	return controlTimeout
}
