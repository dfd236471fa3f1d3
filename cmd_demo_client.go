package main

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/xlb-lb/xlb/splice/demo"
)

func runDemoClient(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("demo-client", "ADDR",
		"Drive keep-alive HTTP/1.1 traffic at ADDR (an xlb in front of demo workers):\n"+
			"CONNS connections, each sending REQUESTS sequential requests for\n"+
			"/bytes/N. Every body is checked against the bytes the workers send and its\n"+
			"hash. Prints how many responses each worker served, and fails on any error.",
		"xlb demo-client --conns 8 --requests 200 127.0.0.1:8080")
	conns := fs.Int("conns", 8, "keep-alive connections")
	requests := fs.Int("requests", 100, "requests per connection")
	sizesFlag := fs.String("sizes", "100,1000,10000,100000,1000000", "body sizes to cycle through, bytes")
	pause := fs.Duration("pause", 0, "pause between two requests of a connection")
	if err := fs.parse(args, stdout); err != nil {
		return err
	}
	if err := fs.wantArgs(1, 1); err != nil {
		return err
	}
	if *conns < 1 || *conns > 100000 || *requests < 1 {
		return usagef("demo-client: --conns must be 1-100000 and --requests at least 1")
	}
	var sizes []int
	for _, s := range strings.Split(*sizesFlag, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 0 || n > demo.MaxBody {
			return usagef("demo-client: --sizes: %q is not a size from 0 to %d", s, demo.MaxBody)
		}
		sizes = append(sizes, n)
	}
	stop := make(chan struct{})
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sig)
	go func() {
		if _, ok := <-sig; ok {
			close(stop)
		}
	}()
	start := time.Now()
	res := demo.Run(fs.Arg(0), *conns, *requests, sizes, *pause, stop)
	took := time.Since(start)
	workers := make([]string, 0, len(res.PerWorker))
	for w := range res.PerWorker {
		workers = append(workers, w)
	}
	sort.Strings(workers)
	fmt.Fprintf(stdout, "%d responses, %.1f MB verified in %.1fs over %d connections\n",
		res.Requests, float64(res.Bytes)/1e6, took.Seconds(), *conns)
	for _, w := range workers {
		fmt.Fprintf(stdout, "  %-10s %6d responses (%.0f%%)\n", w, res.PerWorker[w], 100*float64(res.PerWorker[w])/float64(max(res.Requests, 1)))
	}
	if len(res.Errors) > 0 {
		for _, err := range res.Errors[:min(len(res.Errors), 5)] {
			fmt.Fprintf(stderr, "  error: %v\n", err)
		}
		return fmt.Errorf("demo-client: %d errors", len(res.Errors))
	}
	fmt.Fprintf(stdout, "all payloads intact\n")
	return nil
}
