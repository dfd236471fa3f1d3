//go:build !xlbtest

package splice

import (
	"net"
	"time"
)

// The failure paths of a takeover are tested by injecting failures into it
// (fault_xlbtest.go, compiled only with the xlbtest build tag, which the
// tests that need it build with). A production build has no hook: these do
// nothing, and no environment variable is read.

// handoverHook is where a test injects a failure into the new process's
// side of a takeover, at point; c is the connection to the old process.
func handoverHook(point hookPoint, c *net.UnixConn) error { return nil }

// handoverTimeout bounds each wait of the old process for the new one
// during a takeover.
func handoverTimeout() time.Duration { return controlTimeout }
