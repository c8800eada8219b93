package gateway

import (
	"os/exec"
	"strings"
	"testing"
)

// TestGatewayDoesNotImportRedis keeps the Redis pieces in gateway/redisgw:
// package gateway (not its tests) must not depend on go-redis.
func TestGatewayDoesNotImportRedis(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/spectacles-go/spectacles/gateway").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list listed %d packages: %q", len(deps), out)
	}
	for _, d := range deps {
		if strings.HasPrefix(d, "github.com/redis/go-redis") {
			t.Errorf("package gateway depends on %s", d)
		}
	}
}
