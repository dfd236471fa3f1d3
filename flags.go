package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// errHelp is returned when the user asked for --help: usage was printed, exit 0.
var errHelp = errors.New("help requested")

// flagSet is a subcommand's flags plus the text of its --help.
type flagSet struct {
	*flag.FlagSet
	synopsis, description, examples string
}

// newFlagSet returns a flag set whose --help shows the command's synopsis,
// description and examples. Errors are reported by the caller, not by flag.
func newFlagSet(name, synopsis, description, examples string) *flagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return &flagSet{FlagSet: fs, synopsis: synopsis, description: description, examples: examples}
}

func (fs *flagSet) printUsage(w io.Writer) {
	fmt.Fprintf(w, "Usage: xlb %s [FLAGS] %s\n\n%s\n", fs.Name(), fs.synopsis, fs.description)
	var flags strings.Builder
	fs.SetOutput(&flags)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
	if flags.Len() > 0 {
		fmt.Fprintf(w, "\nFlags:\n%s", flags.String())
	}
	fmt.Fprintf(w, "\nExamples:\n")
	for _, ex := range strings.Split(fs.examples, "\n") {
		fmt.Fprintf(w, "  %s\n", ex)
	}
}

// parse parses args, printing the usage to stdout for --help (errHelp). Flags
// may come before or after positional arguments; "--" ends the flags.
func (fs *flagSet) parse(args []string, stdout io.Writer) error {
	var positional []string
	for {
		err := fs.Parse(args)
		if errors.Is(err, flag.ErrHelp) {
			fs.printUsage(stdout)
			return errHelp
		}
		if err != nil {
			return usagef("%s: %v (run 'xlb %s --help')", fs.Name(), err, fs.Name())
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		if len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			positional = append(positional, rest...)
			break
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
	// Leave only the positional arguments in fs.Args().
	return fs.Parse(append([]string{"--"}, positional...))
}

// wantArgs checks the number of positional arguments.
func (fs *flagSet) wantArgs(min, max int) error {
	n := fs.NArg()
	if max == 0 && n > 0 {
		return usagef("%s takes no arguments (run 'xlb %s --help')", fs.Name(), fs.Name())
	}
	if n < min || (max >= 0 && n > max) {
		return usagef("%s: expected %s, got %d argument(s) (run 'xlb %s --help')", fs.Name(), fs.synopsis, n, fs.Name())
	}
	return nil
}

// printJSON writes v as indented JSON, for --json.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// isSet reports whether the flag was given on the command line.
func (fs *flagSet) isSet(name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) {
		if f.Name == name {
			set = true
		}
	})
	return set
}
