package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/xlb-lb/xlb/splice/demo"
)

func runDemoWorker(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("demo-worker", "ADDR",
		"A small HTTP/1.1 keep-alive server for demos and tests. It answers\n"+
			"  GET /        with its name,\n"+
			"  GET /bytes/N with N deterministic bytes (the same for every worker),\n"+
			"  POST /upload with the SHA-256 of the request body (after 100 Continue\n"+
			"               when the client sends Expect: 100-continue),\n"+
			"  GET /echo    with Connection: Upgrade: 101 Switching Protocols, then an\n"+
			"               echo protocol in both directions on the raw connection,\n"+
			"and says who answered in X-Worker and what the body hashes to in\n"+
			"X-Content-Sha256, so that a client can check every response.",
		"xlb demo-worker --name w1 127.0.0.1:4171")
	name := fs.String("name", "", "name to answer with (default: ADDR)")
	delay := fs.Duration("delay", 0, "added service time per request")
	if err := fs.parse(args, stdout); err != nil {
		return err
	}
	if err := fs.wantArgs(1, 1); err != nil {
		return err
	}
	addr := fs.Arg(0)
	if *name == "" {
		*name = addr
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("demo-worker: %w", err)
	}
	srv := &http.Server{Handler: demo.Handler(*name, *delay), ReadHeaderTimeout: 30 * time.Second}
	fmt.Fprintf(stdout, "demo worker %s listening on %s\n", *name, ln.Addr())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sig
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}()
	if err := srv.Serve(ln); err != nil && err != http.ErrServerClosed {
		return err
	}
	return nil
}
