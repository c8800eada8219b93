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

// redisPackages are the only packages under gateway/ that may depend on
// go-redis: the gateway's Redis pieces and the REST proxy's Redis store.
var redisPackages = map[string]bool{
	"github.com/spectacles-go/spectacles/gateway/redisgw":              true,
	"github.com/spectacles-go/spectacles/gateway/restproxy/redisstore": true,
}

// TestOnlyRedisPackagesImportRedis extends the rule to every package under
// gateway/: go-redis stays in redisPackages, so that importers of the
// gateway, the simulator or the proxy's engine do not link it.
func TestOnlyRedisPackagesImportRedis(t *testing.T) {
	out, err := exec.Command("go", "list", "github.com/spectacles-go/spectacles/gateway/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	pkgs := strings.Fields(string(out))
	if len(pkgs) < 5 {
		t.Fatalf("go list listed %d packages: %q", len(pkgs), out)
	}
	for _, p := range pkgs {
		if redisPackages[p] {
			continue
		}
		deps, err := exec.Command("go", "list", "-deps", p).CombinedOutput()
		if err != nil {
			t.Fatalf("go list -deps %s: %v\n%s", p, err, deps)
		}
		for _, d := range strings.Fields(string(deps)) {
			if strings.HasPrefix(d, "github.com/redis/go-redis") {
				t.Errorf("package %s depends on %s", p, d)
				break
			}
		}
	}
}
