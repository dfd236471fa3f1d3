package lab

import (
	"fmt"
	"os"
	"strconv"
	"time"
)

// Settings of the programs (bench, scale, soak) come from the environment
// (BENCH_DURATION=2s ...): the default when a variable is unset or empty; a
// value that does not parse ends the program with a message that names it,
// rather than quietly running with the default.

// EnvDuration reads a duration ("90s", "30m").
func EnvDuration(name string, def time.Duration) time.Duration {
	if v := os.Getenv(name); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			badEnv(name, v, "a duration such as 2s or 30m")
		}
		return d
	}
	return def
}

// EnvInt reads an integer.
func EnvInt(name string, def int) int {
	if v := os.Getenv(name); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			badEnv(name, v, "a number")
		}
		return n
	}
	return def
}

// EnvString reads a string.
func EnvString(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// badEnv is a setting that does not parse: said, and the program ends
// (exit status 2, as for a bad flag).
var badEnv = func(name, value, want string) {
	fmt.Fprintf(os.Stderr, "%s=%q: want %s\n", name, value, want)
	os.Exit(2)
}
