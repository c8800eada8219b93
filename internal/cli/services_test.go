package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spectacles-go/spectacles/core"
	amqptransport "github.com/spectacles-go/spectacles/transport/amqp"
	"github.com/spectacles-go/spectacles/transport/amqp/amqptest"
)

// serviceLine is what the test reads of a `services --json` item.
type serviceLine struct {
	Group   string   `json:"group"`
	Client  string   `json:"client"`
	Version string   `json:"version"`
	Status  string   `json:"status"`
	Events  []string `json:"events"`
	IdleMs  float64  `json:"idle_ms"`
}

// services runs `spectacles services --json` in process with env and
// returns the instances of group.
func services(t *testing.T, env map[string]string, group string) []serviceLine {
	t.Helper()
	r := invocation{env: env}.run(t.Context(), "services", "--json")
	if r.code != 0 {
		t.Fatalf("services: %+v", r)
	}
	var all []serviceLine
	if err := json.Unmarshal([]byte(r.stdout), &all); err != nil {
		t.Fatalf("services printed %q: %v", r.stdout, err)
	}
	var out []serviceLine
	for _, in := range all {
		if in.Group == group {
			out = append(out, in)
		}
	}
	return out
}

// waitServices polls services until ok accepts the group's instances.
func waitServices(t *testing.T, env map[string]string, group string, within time.Duration, ok func([]serviceLine) bool) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		list := services(t, env, group)
		if ok(list) {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("services never showed what was expected of %s within %s; last: %+v", group, within, list)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestServicesShowsKilledInstance: a consume process announces itself
// (group, client, version, events) and, killed with -9, is shown stale or
// gone: on the hub at once (its socket closes), on Redis once its
// heartbeat is older than the TTL (12 s by default), on RabbitMQ at once
// (no live instance answers for it).
func TestServicesShowsKilledInstance(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildSpectacles(t)

	// check runs the consumer, kills it and, when reason is set, wants the
	// presence history to say it disconnected so.
	check := func(t *testing.T, procEnv []string, inProc map[string]string, group, reason string) {
		consumer := startNode(t, bin, append(procEnv, "BROKER_GROUP="+group, "BROKER_CLIENT=worker-1"),
			"consume", "MESSAGE_CREATE", "GUILD_CREATE")
		waitServices(t, inProc, group, 30*time.Second, func(list []serviceLine) bool {
			if len(list) != 1 {
				return false
			}
			in := list[0]
			if in.Client != "worker-1" || in.Status != "online" || !strings.HasPrefix(in.Version, "spectacles ") ||
				strings.Join(in.Events, ",") != "GUILD_CREATE,MESSAGE_CREATE" {
				t.Fatalf("instance %+v", in)
			}
			return true
		})
		if err := consumer.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		killed := time.Now()
		_ = consumer.cmd.Wait()
		waitServices(t, inProc, group, 45*time.Second, func(list []serviceLine) bool {
			return len(list) == 0 || list[0].Status == "stale"
		})
		t.Logf("shown stale or gone %s after kill -9", time.Since(killed).Round(100*time.Millisecond))
		if reason == "" {
			return
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			r := invocation{env: inProc}.run(t.Context(), "services", "--history", "100", "--json")
			var events []map[string]any
			if err := json.Unmarshal([]byte(r.stdout), &events); r.code != 0 || err != nil {
				t.Fatalf("services --history: %+v (%v)", r, err)
			}
			var got []string
			for _, e := range events {
				if e["group"] == group {
					got = append(got, fmt.Sprint(e["event"], " ", e["reason"]))
				}
			}
			if slices.Contains(got, "spectacles.instance.disconnected "+reason) && slices.Contains(got, "spectacles.group.offline "+reason) &&
				slices.Contains(got, "spectacles.instance.connected <nil>") {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("presence history of %s: %v, want it disconnected and offline (%s)", group, got, reason)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}

	t.Run("Hub", func(t *testing.T) {
		hub := startNode(t, bin, processEnv(t), "hub", "--address", "127.0.0.1:0")
		re := regexp.MustCompile(`tcp://(127\.0\.0\.1:\d+)`)
		var addr string
		for deadline := time.Now().Add(20 * time.Second); addr == ""; time.Sleep(20 * time.Millisecond) {
			if m := re.FindStringSubmatch(hub.stderr.String()); m != nil {
				addr = m[1]
			} else if time.Now().After(deadline) {
				t.Fatalf("the hub named no address; stderr:\n%s", hub.stderr.String())
			}
		}
		env := []string{"BROKER_TYPE=hub", "HUB_URL=tcp://" + addr}
		check(t, append(processEnv(t), env...), map[string]string{"BROKER_TYPE": "hub", "HUB_URL": "ws://" + addr, "REDIS_URL": ""}, unique("svc"), "lost")
		if err := hub.stop(t, syscall.SIGTERM); err != nil {
			t.Errorf("hub after SIGTERM: %v; stderr:\n%s", err, hub.stderr.String())
		}
	})
	t.Run("Redis", func(t *testing.T) {
		check(t, append(processEnv(t), "REDIS_URL="+testRedisURL), map[string]string{}, unique("svc"), "expired")
	})
	t.Run("AMQP", func(t *testing.T) {
		url := amqptest.URL(t) // presence through AMQP alone: no management API needed
		group := unique("svc")
		deleteAMQP(t, url, group, group+":MESSAGE_CREATE", group+":MESSAGE_CREATE:dlq", group+":GUILD_CREATE", group+":GUILD_CREATE:dlq",
			amqptransport.PresenceQueuePrefix+"group."+group) // nobody lives to report the killed instance
		check(t, append(processEnv(t), "BROKER_TYPE=amqp", "AMQP_URL="+url),
			map[string]string{"BROKER_TYPE": "amqp", "AMQP_URL": url, "REDIS_URL": ""}, group, "")
	})
}

// unhandledLines runs `services --unhandled --json` with env and returns
// the reports of event.
func unhandledLines(t *testing.T, env map[string]string, event string) []map[string]any {
	t.Helper()
	r := invocation{env: env}.run(t.Context(), "services", "--unhandled", "--json")
	if r.code != 0 {
		t.Fatalf("services --unhandled: %+v", r)
	}
	var all []map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &all); err != nil {
		t.Fatalf("services --unhandled printed %q: %v", r.stdout, err)
	}
	s := newSchema(t)
	s.check("services --unhandled", any(toAny(all)), "services")
	var out []map[string]any
	for _, u := range all {
		if u["event"] == event {
			out = append(out, u)
		}
	}
	return out
}

func toAny(v []map[string]any) []any {
	out := make([]any, len(v))
	for i, m := range v {
		out[i] = m
	}
	return out
}

// TestServicesUnhandled: an event published that no group consumes is
// listed by `services` (UNHANDLED, and --unhandled --json) in another
// process: on Redis whoever published it (here `spectacles publish`,
// which checks at exit), on RabbitMQ an instance that announces itself.
func TestServicesUnhandled(t *testing.T) {
	t.Run("Redis", func(t *testing.T) {
		lonely := unique("lonely")
		redisClient(t, lonely)
		if r := cli(t, "publish", lonely, `{"n":1}`); r.code != 0 {
			t.Fatalf("publish: %+v", r)
		}
		if r := cli(t, "publish", lonely, `{"n":2}`); r.code != 0 {
			t.Fatalf("publish: %+v", r)
		}
		list := unhandledLines(t, nil, lonely)
		// Two processes, one name: one publisher.
		if len(list) != 1 || list[0]["message_count"] != 2.0 || list[0]["publisher_count"] != 1.0 {
			t.Fatalf("unhandled %v, want %s: 2 messages by 1 publisher", list, lonely)
		}
		s := newSchema(t)
		s.has("services --unhandled", list[0], "event", "message_count", "publisher_count", "publishers", "last_at")
		r := cli(t, "services")
		if r.code != 0 || !strings.Contains(r.stdout, "UNHANDLED EVENT") || !strings.Contains(r.stdout, lonely) {
			t.Fatalf("services: %+v", r)
		}
	})
	t.Run("AMQP", func(t *testing.T) {
		url := amqptest.URL(t)
		group := unique("unh")
		lonely, mine := unique("LONELY"), unique("MINE")
		deleteAMQP(t, url, group, group+":"+mine, group+":"+mine+":dlq")
		b, err := amqptransport.Open(t.Context(), amqptransport.Config{URL: url, ManagementURL: amqptransport.ManagementOff,
			Options: core.Options{Identity: core.Identity{Group: group, Client: "p"}}})
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		if err := b.Consume(t.Context(), []string{mine}, func(ctx context.Context, m *core.Message) { _ = m.Ack(ctx) }); err != nil {
			t.Fatal(err)
		}
		for range 3 {
			if _, err := b.Publish(t.Context(), lonely, 1); err != nil {
				t.Fatal(err)
			}
		}
		env := map[string]string{"BROKER_TYPE": "amqp", "AMQP_URL": url, "REDIS_URL": ""}
		deadline := time.Now().Add(20 * time.Second)
		for {
			list := unhandledLines(t, env, lonely)
			if len(list) == 1 && list[0]["message_count"] == 3.0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("unhandled %v, want %s: 3 messages", list, lonely)
			}
			time.Sleep(500 * time.Millisecond)
		}
		var line map[string]any
		r := invocation{env: env}.run(t.Context(), "services", "--json")
		var all []map[string]any
		if err := json.Unmarshal([]byte(r.stdout), &all); err != nil || r.code != 0 {
			t.Fatalf("services --json: %+v (%v)", r, err)
		}
		for _, in := range all {
			if in["group"] == group {
				line = in
			}
		}
		u, _ := line["unhandled"].([]any)
		if len(u) != 1 || u[0].(map[string]any)["event"] != lonely || u[0].(map[string]any)["message_count"] != 3.0 {
			t.Fatalf("instance %v, want unhandled [%s: 3]", line, lonely)
		}
	})
}
