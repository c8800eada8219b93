package embedded_test

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestLibrariesDoNotLinkTheEmbeddedServer: the Redis driver, and the
// library packages that use a broker, do not depend on this package or
// on what it links (miniredis and its Lua interpreter, gopher-lua); only
// the programs and tests that start an embedded server do.
func TestLibrariesDoNotLinkTheEmbeddedServer(t *testing.T) {
	// go test puts $GOROOT/bin first on the test's PATH.
	goTool, err := exec.LookPath("go")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true and no go tool to list dependencies with: %v", err)
		}
		t.Skipf("no go tool to list dependencies with: %v", err)
	}
	const module = "github.com/spectacles-go/spectacles"
	forbidden := []string{
		module + "/transport/redis/embedded",
		"github.com/alicebob/miniredis",
		"github.com/yuin/gopher-lua",
	}
	for _, pkg := range []string{"/transport/redis", "/transport/amqp", "/core", "/gateway"} {
		out, err := exec.CommandContext(t.Context(), goTool, "list", "-deps", module+pkg).Output()
		if err != nil {
			var stderr []byte
			if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
				stderr = ee.Stderr
			}
			t.Fatalf("go list -deps %s: %v\n%s", module+pkg, err, stderr)
		}
		deps := strings.Fields(string(out))
		if len(deps) == 0 || deps[len(deps)-1] != module+pkg {
			t.Fatalf("go list -deps %s did not list the package itself last: %q", module+pkg, deps)
		}
		for _, d := range deps {
			for _, f := range forbidden {
				if d == f || strings.HasPrefix(d, f+"/") {
					t.Errorf("%s links %s", module+pkg, d)
				}
			}
		}
	}
}
