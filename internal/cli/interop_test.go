package cli

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// interopDir holds the node side of the interoperability tests: the
// pinned npm packages of the peers (package.json, package-lock.json) and
// the scripts that use them.
const interopDir = "testdata/interop"

// skipOrFail skips the test outside CI and fails it under CI=true: a
// missing peer under CI is a failure, never a skip.
func skipOrFail(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true: %s", msg)
	}
	t.Skip(msg)
}

// nodeModules returns a node_modules directory holding the packages of
// testdata/interop, installed once (npm ci) into the user's cache directory
// under a key made of package.json and package-lock.json, so that runs,
// and CI with a cached directory, do not install them again.
func nodeModules(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		skipOrFail(t, "node is not installed: %v", err)
	}
	if _, err := exec.LookPath("npm"); err != nil {
		skipOrFail(t, "npm is not installed: %v", err)
	}
	h := sha256.New()
	for _, name := range []string{"package.json", "package-lock.json"} {
		b, err := os.ReadFile(filepath.Join(interopDir, name))
		if err != nil {
			t.Fatal(err)
		}
		h.Write(b)
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	base := filepath.Join(cache, "spectacles-interop")
	dir := filepath.Join(base, hex.EncodeToString(h.Sum(nil))[:16])
	modules := filepath.Join(dir, "node_modules")
	if _, err := os.Stat(filepath.Join(dir, "installed")); err == nil {
		return modules
	}
	if err := os.MkdirAll(base, 0o755); err != nil {
		t.Fatal(err)
	}
	// Install into a directory of our own, then rename it into place:
	// concurrent runs never see a half-installed tree.
	tmp, err := os.MkdirTemp(base, "install-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	for _, name := range []string{"package.json", "package-lock.json"} {
		b, _ := os.ReadFile(filepath.Join(interopDir, name))
		if err := os.WriteFile(filepath.Join(tmp, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	install := exec.CommandContext(ctx, "npm", "ci", "--no-audit", "--no-fund")
	install.Dir = tmp
	if out, err := install.CombinedOutput(); err != nil {
		skipOrFail(t, "npm ci failed (no network?): %v\n%s", err, out)
	}
	if err := os.WriteFile(filepath.Join(tmp, "installed"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		if _, serr := os.Stat(filepath.Join(dir, "installed")); serr != nil {
			t.Fatalf("install the npm packages: %v", err)
		} // another run installed them first
	}
	return modules
}

// callsResult is the line testdata/interop/calls.js prints.
type callsResult struct {
	Peer     string   `json:"peer"`
	Calls    int      `json:"calls"`
	Answered int      `json:"answered"`
	Wrong    int      `json:"wrong"`
	Errors   []string `json:"errors"`
}

// TestInteropPeersCallRespond: the callers of @discordjs/brokers 1.0.0 and
// @spectacles/brokers 0.9.3 (real npm packages, run by node) call a
// `spectacles respond` process through the real server, 100 calls each,
// 10 at a time, with the peers' own 5 s timeout. Both subscribe to the
// reply channel only after their XADD, and drop a reply that comes with
// their subscription's confirmation: before the driver published replies
// again, 10 to 75 of 100 calls were answered. At least 99 must be.
func TestInteropPeersCallRespond(t *testing.T) {
	if testing.Short() {
		t.Skip("runs node and builds the binary")
	}
	modules := nodeModules(t)
	bin := buildSpectacles(t)
	script, err := filepath.Abs(filepath.Join(interopDir, "calls.js"))
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []struct {
		name   string
		args   []string
		expect string
	}{
		{"fixed reply", []string{"--reply", `{"ok":true}`}, `{"ok":true}`},
		{"command", []string{"--", "cat"}, "echo"},
	} {
		t.Run(mode.name, func(t *testing.T) {
			event, group := unique("cli-interop"), unique("g")
			redisClient(t, event)
			args := append([]string{event, "--group", group, "--concurrency", "10"}, mode.args...)
			p := startRespond(t, bin, args...)
			for _, peer := range []string{"djs", "sjs"} {
				ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
				node := exec.CommandContext(ctx, "node", script, peer, event, "100")
				node.Env = append(os.Environ(), "NODE_PATH="+modules, "REDIS_URL="+testRedisURL, "EXPECT="+mode.expect)
				var stderr strings.Builder
				node.Stderr = &stderr
				out, err := node.Output()
				cancel()
				if err != nil {
					t.Fatalf("%s: node: %v\n%s", peer, err, stderr.String())
				}
				var r callsResult
				if err := json.Unmarshal(out, &r); err != nil {
					t.Fatalf("%s: %q: %v", peer, out, err)
				}
				t.Logf("%s: %d of %d calls answered", peer, r.Answered, r.Calls)
				if r.Calls != 100 || r.Answered < 99 || r.Wrong != 0 {
					t.Errorf("%s: %+v: want at least 99 of 100 calls answered and no wrong reply; respond stderr:\n%s", peer, r, p.stderr.String())
				}
			}
		})
	}
}
