package cli

import (
	"context"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/spectacles-go/spectacles/core"
	amqptransport "github.com/spectacles-go/spectacles/transport/amqp"
	"github.com/spectacles-go/spectacles/transport/amqp/amqptest"
)

// The AMQP tests here take the machine's RabbitMQ from amqptest.URL
// ($SPECTACLES_AMQP_URL, else the local default; a missing one fails
// under CI and skips the test elsewhere): they do not need the management
// API.

// deleteAMQP removes the exchange and queues a test created.
func deleteAMQP(t *testing.T, url, exchange string, queues ...string) {
	t.Cleanup(func() {
		conn, err := amqp091.Dial(url)
		if err != nil {
			return
		}
		defer conn.Close()
		ch, err := conn.Channel()
		if err != nil {
			return
		}
		for _, q := range queues {
			_, _ = ch.QueueDelete(q, false, false, false)
		}
		_ = ch.ExchangeDelete(exchange, false, false)
	})
}

func TestBrokerTypeAMQPPublishConsumeCall(t *testing.T) {
	url := amqptest.URL(t)
	group, ev := unique("cli-amqp"), unique("EVENT")
	deleteAMQP(t, url, group, group+":"+ev, group+":"+ev+":dlq", group+":REQ", group+":REQ:dlq", group+":NOBODY", group+":NOBODY:dlq")
	env := map[string]string{"BROKER_TYPE": "amqp", "AMQP_URL": url, "BROKER_GROUP": group}

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var out syncBuffer
	done := make(chan result, 1)
	go func() { done <- invocation{env: env, stdout: &out}.run(ctx, "consume", ev) }()
	// The queue exists once the consumer runs; publish until it arrives.
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(out.String(), "over-amqp") {
		if time.Now().After(deadline) {
			t.Fatalf("nothing consumed; output %q", out.String())
		}
		if r := (invocation{env: env}).run(t.Context(), "publish", ev, `{"via":"over-amqp"}`); r.code != 0 {
			t.Fatalf("publish: %d %s", r.code, r.stderr)
		}
		time.Sleep(200 * time.Millisecond)
	}
	var line map[string]any
	if err := json.Unmarshal([]byte(strings.SplitN(out.String(), "\n", 2)[0]), &line); err != nil || line["event"] != ev {
		t.Errorf("consume line %q: %v", out.String(), err)
	}
	cancel()
	if r := <-done; r.code != 0 {
		t.Errorf("consume exited %d: %s", r.code, r.stderr)
	}

	// call over AMQP: a responder of the same group answers on the
	// default exchange; the CLI prints the reply.
	responder, err := amqptransport.Open(t.Context(), amqptransport.Config{URL: url, Options: core.Options{
		Identity: core.Identity{Group: group, Client: "responder"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer responder.Close()
	if err := responder.Consume(t.Context(), []string{"REQ"}, func(ctx context.Context, m *core.Message) {
		data, _ := m.Data()
		_ = m.Reply(ctx, map[string]any{"echo": data})
		_ = m.Ack(ctx)
	}); err != nil {
		t.Fatal(err)
	}
	r := (invocation{env: env}).run(t.Context(), "call", "REQ", `{"x":1}`, "--timeout", "5s")
	if r.code != 0 || strings.TrimSpace(r.stdout) != `{"echo":{"x":1}}` {
		t.Errorf("call over AMQP: %d %q %q", r.code, r.stdout, r.stderr)
	}
	// Nobody has a queue for NOBODY: the call comes back (mandatory) and
	// fails at once, long before its minute.
	if r := (invocation{env: env}).run(t.Context(), "call", "NOBODY", `{}`, "--timeout", "1m"); r.code != 1 ||
		!strings.Contains(r.stderr, "no queue is bound to it") {
		t.Errorf("call nobody can read over AMQP: exit %d %s", r.code, r.stderr)
	}
}

// TestPendingCommandsOnAMQP: RabbitMQ is no core.PendingInspector, so
// pending, ack, claim and dlq move fail (exit 1) and say why, naming the
// broker type, before touching any message.
func TestPendingCommandsOnAMQP(t *testing.T) {
	url := amqptest.URL(t)
	group := unique("cli-amqp-pending")
	deleteAMQP(t, url, group)
	env := map[string]string{"BROKER_TYPE": "amqp", "AMQP_URL": url, "BROKER_GROUP": group, "AMQP_MANAGEMENT_URL": "off"}
	for _, c := range []struct {
		args []string
		why  string
	}{
		{[]string{"pending", "EV", "g"}, "pending: not supported by this broker (BROKER_TYPE=amqp): AMQP cannot list the unacknowledged messages of other consumers"},
		{[]string{"ack", "EV", "g", "1-0"}, "ack: not supported by this broker (BROKER_TYPE=amqp): only the channel a message was delivered on can acknowledge it"},
		{[]string{"claim", "EV", "g", "1-0"}, "claim: not supported by this broker (BROKER_TYPE=amqp): AMQP cannot take a message from the consumer it was delivered to"},
		{[]string{"dlq", "move", "EV", "g", "1-0"}, "dlq move: not supported by this broker (BROKER_TYPE=amqp): AMQP cannot take a message from the consumer it was delivered to"},
	} {
		r := invocation{env: env}.run(t.Context(), c.args...)
		if r.code != exitError || !strings.Contains(r.stderr, "spectacles: "+c.why) || r.stdout != "" {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit %d and %q", c.args, r.code, r.stdout, r.stderr, exitError, c.why)
		}
	}
}

func TestBrokerTypeIPC(t *testing.T) {
	env := map[string]string{"BROKER_TYPE": "ipc", "REDIS_URL": ""}
	// publish writes the message to standard output as one JSON line, and
	// prints its id on standard error.
	var stdout syncBuffer
	r := invocation{env: env, stdout: &stdout}.run(t.Context(), "publish", "MESSAGE_CREATE", `{"content":"hi"}`)
	if r.code != 0 {
		t.Fatalf("publish: %d %s", r.code, r.stderr)
	}
	var line struct {
		Event string         `json:"event"`
		ID    string         `json:"id"`
		Data  map[string]any `json:"data"`
	}
	if err := json.Unmarshal([]byte(stdout.String()), &line); err != nil || line.Event != "MESSAGE_CREATE" || line.Data["content"] != "hi" {
		t.Fatalf("stdout %q: %v", stdout.String(), err)
	}
	if !strings.Contains(r.stderr, line.ID) {
		t.Errorf("the id %s is not on stderr: %q", line.ID, r.stderr)
	}
	// consume reads such lines from standard input.
	in := strings.NewReader(`{"event":"MESSAGE_CREATE","data":{"content":"from a pipe"}}` + "\n" + `{"event":"OTHER","data":1}` + "\n")
	r = invocation{env: map[string]string{"BROKER_TYPE": "ipc", "BROKER_GROUP": "g"}, stdin: in}.run(t.Context(), "consume", "MESSAGE_CREATE")
	if r.code != 0 || !strings.Contains(r.stderr, `"from a pipe"`) || strings.Contains(r.stderr, "OTHER") {
		t.Errorf("consume over ipc: %d %q", r.code, r.stderr)
	}
	// A command that needs several clients refuses ipc with a clear error.
	r = invocation{env: env}.run(t.Context(), "bench", "--messages", "10")
	if r.code == 0 || !strings.Contains(r.stderr, "needs a broker server") {
		t.Errorf("bench over ipc: %d %q", r.code, r.stderr)
	}
}

// TestStreamsWarnsWithoutStatistics: `streams` on RabbitMQ with a
// management API that does not answer lists what AMQP alone tells and
// says on standard error that the statistics are unavailable, naming the
// API's URL without its password; with the API off, too.
func TestStreamsWarnsWithoutStatistics(t *testing.T) {
	url := amqptest.URL(t)
	group := unique("cli-amqp-nostats")
	deleteAMQP(t, url, group)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	_ = ln.Close()
	for _, mgmt := range []string{"http://guest:S3cretMgmt@" + dead, "off"} {
		env := map[string]string{"BROKER_TYPE": "amqp", "AMQP_URL": url, "BROKER_GROUP": group, "AMQP_MANAGEMENT_URL": mgmt}
		r := invocation{env: env}.run(t.Context(), "streams")
		want := "spectacles: warning: statistics unavailable: management API at http://" + dead + " does not answer"
		if mgmt == "off" {
			want = "spectacles: warning: statistics unavailable: the management API is disabled"
		}
		if r.code != 0 || !strings.Contains(r.stderr, want) || strings.Contains(r.stderr, "S3cretMgmt") {
			t.Errorf("streams, management API %s: exit %d, stderr %q; want %q", mgmt, r.code, r.stderr, want)
		}
	}
}
