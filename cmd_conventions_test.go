package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// conventionsBinary builds the command once per test that needs the binary.
func conventionsBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	return buildSpectacles(t)
}

// scriptPath returns the path of script(1), which runs a command on a
// pseudo-terminal; outside CI its absence skips the test.
func scriptPath(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("script")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("script(1) is needed to run the command on a terminal: %v", err)
		}
		t.Skipf("script(1) is not installed: %v", err)
	}
	return p
}

// TestNoTerminalQueryOutsideConsole runs commands on a pseudo-terminal that
// answers nothing (as script(1) gives): no command but the console may ask
// the terminal anything (bubbletea's init asked for the background colour
// with OSC 11, then waited 5 s for an answer that never came).
func TestNoTerminalQueryOutsideConsole(t *testing.T) {
	bin := conventionsBinary(t)
	script := scriptPath(t)
	for _, args := range []string{"--help", "version", "streams --help", "publish --help"} {
		t.Run(args, func(t *testing.T) {
			// A bound on a hang (the query waited 5 s), not a speed measure.
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, script, "-qec", bin+" "+args, "/dev/null")
			cmd.Env = append(os.Environ(), "TERM=xterm-256color", "REDIS_URL="+testRedisURL)
			cmd.Env = append(cmd.Env, "CI=") // termenv asks nothing when CI is set
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			start := time.Now()
			err := cmd.Run()
			took := time.Since(start)
			if err != nil {
				t.Fatalf("%s: %v after %s\n%q", args, err, took, out.String())
			}
			for _, query := range []string{"\x1b]11;?", "\x1b]10;?", "\x1b[6n", "\x1b[c"} {
				if strings.Contains(out.String(), query) {
					t.Errorf("%s wrote the terminal query %q (and waited %s for its answer)", args, query, took)
				}
			}
			if !strings.Contains(out.String(), "spectacles") {
				t.Errorf("%s printed no help or version: %q", args, out.String())
			}
		})
	}
}
