package restore

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestTERMRestored runs this test binary again with a known TERM (and
// without one): once bubbletea has initialised, the process sees TERM as
// it was given, not the "dumb" that package quietterm set for bubbletea's
// init.
func TestTERMRestored(t *testing.T) {
	if v, ok := os.LookupEnv("QUIETTERM_CHILD"); ok {
		got, set := os.LookupEnv("TERM")
		if v == "unset" && set {
			t.Fatalf("TERM = %q, want it unset", got)
		}
		if v != "unset" && got != v {
			t.Fatalf("TERM = %q, want %q", got, v)
		}
		return
	}
	for _, term := range []string{"xterm-256color", "unset"} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestTERMRestored$", "-test.count=1")
		env := []string{"QUIETTERM_CHILD=" + term}
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, "TERM=") {
				env = append(env, kv)
			}
		}
		if term != "unset" {
			env = append(env, "TERM="+term)
		}
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("TERM %s: %v\n%s", term, err, out)
		}
	}
}
