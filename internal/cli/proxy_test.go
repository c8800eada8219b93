package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/gateway/simulator"
	redistransport "github.com/spectacles-go/spectacles/transport/redis"
	"github.com/spectacles-go/spectacles/transport/redis/redistest"
)

// startProxyProcess starts `spectacles proxy` with env and waits until it
// is ready.
func startProxyProcess(t *testing.T, bin string, env ...string) *process {
	t.Helper()
	p := startProcessEnv(t, bin, env, "proxy")
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(p.stderr.String(), "msg=\"proxy ready\"") {
		select {
		case err := <-p.done:
			p.done <- err
			t.Fatalf("proxy exited (%v); stderr:\n%s", err, p.stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("proxy not ready; stderr:\n%s", p.stderr.String())
		}
	}
	return p
}

// startRESTFake serves the REST fake with limits 25 times faster than
// Discord's (POST messages: 5 per 200 ms) until t ends.
func startRESTFake(t *testing.T) (*simulator.REST, *httptest.Server) {
	t.Helper()
	rest, err := simulator.NewREST(simulator.RESTConfig{TimeScale: 0.04})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(rest)
	t.Cleanup(srv.Close)
	return rest, srv
}

// TestProxyProcessesShareRedisLimits runs two `spectacles proxy`
// processes on one leased Redis database against the REST fake: broker
// calls and HTTP requests to one bucket, spread over both, draw no 429;
// SIGTERM stops both cleanly, and neither logged the token.
func TestProxyProcessesShareRedisLimits(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	rest, srv := startRESTFake(t)
	url, _ := redistest.ExclusiveDB(t)
	event, prefix := unique("REQUEST"), unique("proxy")+":"
	raw := redistest.Client(t, url)
	redistest.DeleteKeys(t, raw, event)
	t.Cleanup(func() {
		keys, _ := raw.Keys(context.Background(), prefix+"*").Result()
		if len(keys) > 0 {
			raw.Del(context.Background(), keys...)
		}
	})
	bin := buildSpectacles(t)
	httpAddr, adminAddr := freeAddr(t), freeAddr(t)
	env := []string{"REDIS_URL=" + url, "BROKER_EVENT=" + event, "PROXY_RATELIMIT_STORE=redis", "PROXY_RATELIMIT_PREFIX=" + prefix,
		"DISCORD_API_PROTOCOL=http", "DISCORD_API_HOST=" + strings.TrimPrefix(srv.URL, "http://"), "LOG_LEVEL=debug"}
	a := startProxyProcess(t, bin, append(env, "PROXY_HTTP_ADDRESS="+httpAddr, "PROMETHEUS_ADDRESS="+adminAddr, "BROKER_CLIENT=a")...)
	b := startProxyProcess(t, bin, append(env, "BROKER_CLIENT=b")...)

	caller, err := redistransport.Open(context.Background(), redistransport.Config{URL: url, Options: core.Options{
		Identity: core.Identity{Group: "caller", Client: "caller"}, CallTimeout: 20 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	defer caller.Close()
	const token = "Bot " + simulator.DefaultToken
	channel := "/channels/300000000000000001/messages"
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Go(func() {
			req, _ := msgpack.Marshal(map[string]any{"method": "POST", "path": channel, "body": fmt.Sprintf(`{"content":"%d"}`, i),
				"headers": map[string]any{"Authorization": token, "content-type": "application/json"}})
			p, err := caller.Call(context.Background(), event, core.Raw(req))
			if err != nil {
				t.Errorf("call %d: %v", i, err)
				return
			}
			var reply struct {
				Status int `msgpack:"status"`
				Body   struct {
					Status int `msgpack:"status"`
				} `msgpack:"body"`
			}
			if err := msgpack.Unmarshal(p.Raw, &reply); err != nil || reply.Status != 0 || reply.Body.Status != 200 {
				t.Errorf("call %d: %+v %v", i, reply, err)
			}
		})
		wg.Go(func() {
			req, _ := http.NewRequest("POST", "http://"+httpAddr+"/api/v10"+channel, strings.NewReader("{}"))
			req.Header.Set("Authorization", token)
			req.Header.Set("Content-Type", "application/json")
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Errorf("http %d: %v", i, err)
				return
			}
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode != 200 {
				t.Errorf("http %d: %d", i, res.StatusCode)
			}
		})
	}
	wg.Wait()
	http.DefaultClient.CloseIdleConnections()
	if s := rest.Stats(); s.ByStatus[429] != 0 || s.Requests != 40 {
		t.Fatalf("the fake saw %+v, want 40 requests and no 429", s)
	}
	// The CLI twin reads the shared buckets from Redis, and one proxy's
	// (with its recent 429s) from its admin address.
	sc := newSchema(t)
	for _, args := range [][]string{{"buckets", "--json", "--prefix", prefix}, {"buckets", "--json", "--address", adminAddr}} {
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), "REDIS_URL="+url)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		var doc struct {
			BucketCount int `json:"bucket_count"`
			Buckets     []struct {
				Identity, Bucket, Resource string
				Limit                      int
			} `json:"buckets"`
		}
		if err := json.Unmarshal(out, &doc); err != nil {
			t.Fatalf("%v: %q: %v", args, out, err)
		}
		var v any
		_ = json.Unmarshal(out, &v)
		sc.check("buckets", v, "buckets")
		found := false
		for _, bk := range doc.Buckets {
			if bk.Resource == "channels/300000000000000001" && bk.Bucket == "#"+simulator.BucketHash("messages-write") && bk.Limit == 5 {
				found = true
			}
			if strings.Contains(bk.Identity, simulator.DefaultToken) {
				t.Fatalf("a token in %+v", bk)
			}
		}
		if !found || doc.BucketCount != len(doc.Buckets) {
			t.Fatalf("%v: %s", args, out)
		}
	}
	for name, p := range map[string]*process{"a": a, "b": b} {
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if code := p.wait(t, 30*time.Second); code != 0 {
			t.Errorf("proxy %s exited %d; stderr:\n%s", name, code, p.stderr.String())
		}
		if strings.Contains(p.stderr.String(), simulator.DefaultToken) {
			t.Errorf("proxy %s logged the token:\n%s", name, p.stderr.String())
		}
	}
	if !strings.Contains(b.stderr.String(), "replied") {
		t.Errorf("proxy b answered nothing: the consumer group did not spread the calls; stderr:\n%s", b.stderr.String())
	}
}

// proxyClientsResult is the line testdata/interop/proxy.js prints.
type proxyClientsResult struct {
	Mode   string   `json:"mode"`
	Calls  int      `json:"calls"`
	OK     int      `json:"ok"`
	Errors []string `json:"errors"`
}

// TestInteropProxyClients: @spectacles/proxy's Client (over
// @spectacles/brokers, event REQUEST) and @discordjs/rest (its api URL
// pointed at the HTTP side), real npm packages run by node, send bursts
// through a `spectacles proxy` process to the REST fake: every request is
// answered, the percent-encoded emoji reaches the fake unchanged, the JS
// client's missing User-Agent is supplied, and the fake sends no 429.
func TestInteropProxyClients(t *testing.T) {
	if testing.Short() {
		t.Skip("runs node and builds the binary")
	}
	modules := nodeModules(t)
	bin := buildSpectacles(t)
	script, err := filepath.Abs(filepath.Join(interopDir, "proxy.js"))
	if err != nil {
		t.Fatal(err)
	}
	rest, srv := startRESTFake(t)
	// @spectacles/proxy calls the fixed event REQUEST: a database of the
	// test's own keeps it from other tests.
	url, _ := redistest.ExclusiveDB(t)
	raw := redistest.Client(t, url)
	raw.Del(context.Background(), "REQUEST")
	redistest.DeleteKeys(t, raw, "REQUEST")
	httpAddr := freeAddr(t)
	p := startProxyProcess(t, bin, "REDIS_URL="+url, "PROXY_HTTP_ADDRESS="+httpAddr,
		"DISCORD_API_PROTOCOL=http", "DISCORD_API_HOST="+strings.TrimPrefix(srv.URL, "http://"))
	channel, message := "300000000000000002", "300000000000000003"
	for _, mode := range []string{"sjs", "djs"} {
		ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
		node := exec.CommandContext(ctx, "node", script, mode, "12")
		node.Env = append(os.Environ(), "NODE_PATH="+modules, "REDIS_URL="+url, "PROXY_URL=http://"+httpAddr+"/api",
			"TOKEN="+simulator.DefaultToken, "CHANNEL="+channel, "MESSAGE="+message)
		var stderr strings.Builder
		node.Stderr = &stderr
		out, err := node.Output()
		cancel()
		if err != nil {
			t.Fatalf("%s: node: %v\n%s\nproxy stderr:\n%s", mode, err, stderr.String(), p.stderr.String())
		}
		var r proxyClientsResult
		if err := json.Unmarshal(out, &r); err != nil {
			t.Fatalf("%s: %q: %v", mode, out, err)
		}
		if r.Calls != 13 || r.OK != 13 {
			t.Errorf("%s: %+v; proxy stderr:\n%s", mode, r, p.stderr.String())
		}
	}
	if s := rest.Stats(); s.ByStatus[429] != 0 || s.Requests != 26 {
		t.Errorf("the fake saw %+v, want 26 requests and no 429", s)
	}
	var reactions int
	for _, r := range rest.Requests() {
		if strings.Contains(r.Path, "/reactions/") {
			reactions++
			if !strings.HasSuffix(r.Path, "/reactions/%F0%9F%91%8D/@me") {
				t.Errorf("the emoji did not reach Discord unchanged: %q", r.Path)
			}
		}
		if r.UserAgent == "" || !strings.HasPrefix(r.UserAgent, "DiscordBot (") {
			t.Errorf("User-Agent %q", r.UserAgent)
		}
	}
	if reactions != 2 {
		t.Errorf("%d reactions reached the fake, want 2", reactions)
	}
}

// With nothing in the Redis store, buckets says where a memory-store
// proxy's buckets are instead of suggesting there are none.
func TestBucketsEmptyStoreSaysWhere(t *testing.T) {
	r := cli(t, "buckets", "--prefix", unique("empty-proxy")+":")
	if r.code != 0 {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	if !strings.Contains(r.stdout, "0 buckets") || !strings.Contains(r.stdout, "--address") {
		t.Errorf("stdout %q: want the count and where else to look", r.stdout)
	}
}
