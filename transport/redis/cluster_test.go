package redis

import (
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/spectacles-go/spectacles/core/conformance"
	"github.com/spectacles-go/spectacles/internal/brokertest"
)

// startCluster starts a three-master Redis Cluster of child processes on
// free ports and returns the REDIS_URL for it (a comma list); ok is false
// when redis-server or redis-cli is missing.
func startCluster(t *testing.T) (string, bool) {
	t.Helper()
	server, err1 := exec.LookPath("redis-server")
	cli, err2 := exec.LookPath("redis-cli")
	if err1 != nil || err2 != nil {
		return "", false
	}
	var addrs []string
	for range 3 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		_ = l.Close()
		dir := t.TempDir()
		cmd := exec.Command(server, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
			"--cluster-config-file", dir+"/nodes.conf", "--save", "", "--appendonly", "no", "--dir", dir, "--loglevel", "warning")
		brokertest.DieWithTest(cmd)
		if err := cmd.Start(); err != nil {
			t.Fatalf("start redis-server: %v", err)
		}
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		})
		c := &childRedis{port: port}
		if err := c.waitReady(5 * time.Second); err != nil {
			t.Fatalf("cluster node %d: %v", port, err)
		}
		addrs = append(addrs, c.addr())
	}
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.Command(cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	url := strings.Join(addrs, ",")
	c, err := NewClient(url, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cc := c.(*goredis.ClusterClient)
	// Every node must agree the cluster is up, and every master must take
	// writes: right after creation a node may still answer CLUSTERDOWN.
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := clusterReady(t, addrs, cc)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster not ready: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return url, true
}

// clusterReady reports why the cluster cannot serve yet, or nil.
func clusterReady(t *testing.T, addrs []string, cc *goredis.ClusterClient) error {
	for _, a := range addrs {
		node := goredis.NewClient(&goredis.Options{Addr: a})
		info, err := node.ClusterInfo(t.Context()).Result()
		_ = node.Close()
		if err != nil {
			return err
		}
		if !strings.Contains(info, "cluster_state:ok") {
			return fmt.Errorf("node %s: cluster_state not ok", a)
		}
	}
	// Keys spread over the slots, so that every master is written to.
	for i := range 32 {
		key := fmt.Sprintf("cluster-probe-%d", i)
		if err := cc.Set(t.Context(), key, 1, time.Second).Err(); err != nil {
			return err
		}
	}
	return nil
}

// TestConformanceCluster runs the suite against a real three-node Redis
// Cluster, where a client's streams live on different nodes: one reader per
// stream, and dead-lettering is XADD then XACK instead of MULTI.
func TestConformanceCluster(t *testing.T) {
	t.Parallel()
	url, ok := startCluster(t)
	if !ok {
		brokertest.Missing(t, errors.New("redis-server or redis-cli is not installed: no cluster to test against"))
	}
	f := allFeatures
	f.Restart = false // restarting a whole cluster is not what this test is about
	conformance.Run(t, setupFor(t, url, 100*time.Millisecond, f, nil))
}
