package amqp

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/internal/brokertest"
	"github.com/spectacles-go/spectacles/internal/redact"
)

func TestOpenURLErrorsHideThePassword(t *testing.T) {
	t.Parallel()
	const secret = brokertest.URLSecret
	brokertest.CheckURLErrors(t, ErrInvalidURL, []string{
		"amqp://user:" + secret + "@rabbit.internal:notaport/",
		"http://user:" + secret + "@rabbit.internal:5672/",
		"amqp://user:" + secret + "%zz@rabbit.internal:5672/",
		"amqp://user:" + secret + "@[::1",
		"amqp://user:" + secret + "@rabbit.internal:5672/?heartbeat=x" + secret,
		"amqp://user:" + secret + " @rabbit.internal:5672/",
		"rabbit.internal:5672",
	}, func(url string) error {
		_, err := Open(context.Background(), Config{URL: url, Exchange: "x"})
		return err
	})
}

func TestOpenFailsFastWithoutThePassword(t *testing.T) {
	t.Parallel()
	// Port 1 on loopback: connection refused.
	brokertest.CheckDialError(t, "amqp://user:s3cretpw@127.0.0.1:1/", func(ctx context.Context, url string) error {
		_, err := Open(ctx, Config{URL: url, Exchange: "x"})
		return err
	})
}

func TestOpenWrongPassword(t *testing.T) {
	t.Parallel()
	url := serverURL(t)
	u, err := parseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	bad := u
	bad.Username, bad.Password = "spectacles-nobody", "n0tTh3Pa55word"
	_, err = Open(ctxT(t), Config{URL: bad.String(), Exchange: "x"})
	if err == nil {
		t.Fatal("Open succeeded with a wrong password")
	}
	if strings.Contains(err.Error(), "n0tTh3Pa55word") {
		t.Errorf("error shows the password: %v", err)
	}
	var ae *amqp091.Error
	if !errors.As(err, &ae) {
		t.Logf("error is not an *amqp091.Error: %v", err)
	}
}

// TestOpenTLS: an amqps:// URL speaks TLS (here to RabbitMQ's plain AMQP
// port, which refuses it), and the error hides the password.
func TestOpenTLS(t *testing.T) {
	t.Parallel()
	url := serverURL(t)
	u, err := parseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	u.Scheme = "amqps"
	u.Password = "tl5S3cret"
	_, err = Open(ctxT(t), Config{URL: u.String(), Exchange: "x", ConnectTimeout: 3 * time.Second})
	if err == nil {
		t.Fatal("Open over TLS to a plain AMQP port succeeded")
	}
	if !strings.Contains(err.Error(), "tls") || strings.Contains(err.Error(), "tl5S3cret") {
		t.Errorf("err = %v, want a TLS failure without the password", err)
	}
}

func TestConfigDefaultsAndValidation(t *testing.T) {
	t.Parallel()
	c, err := Config{Options: core.Options{Identity: core.Identity{Group: "gateway", Client: "g1"}}}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if c.Exchange != "gateway" || c.URL != DefaultURL || c.Prefetch != DefaultPrefetch || c.PublishChannels != DefaultPublishChannels ||
		c.ConnectTimeout != DefaultConnectTimeout || c.Heartbeat != DefaultHeartbeat || c.MaxDeliveries != core.DefaultMaxDeliveries || c.Expire {
		t.Errorf("defaults %+v", c)
	}
	c, err = Config{Exchange: "x", URL: "amqp://rabbit/?connection_timeout=1500"}.withDefaults()
	if err != nil || c.ConnectTimeout != 1500*time.Millisecond {
		t.Errorf("connection_timeout: %v (err %v)", c.ConnectTimeout, err)
	}
	for name, bad := range map[string]Config{
		"no exchange":       {},
		"negative prefetch": {Exchange: "x", Prefetch: -1},
		"huge prefetch":     {Exchange: "x", Prefetch: 70000},
		"negative channels": {Exchange: "x", PublishChannels: -1},
		"negative timeout":  {Exchange: "x", ConnectTimeout: -time.Second},
	} {
		if _, err := Open(context.Background(), bad); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: err = %v, want ErrInvalidConfig", name, err)
		}
	}
}

func TestQueueName(t *testing.T) {
	t.Parallel()
	if got := QueueName("gateway", "", "MESSAGE_CREATE"); got != "gateway:MESSAGE_CREATE" {
		t.Errorf("got %q", got)
	}
	if got := QueueName("gateway", "commands", "MESSAGE_CREATE"); got != "gateway:commands:MESSAGE_CREATE" {
		t.Errorf("got %q", got)
	}
}

func TestRedactURL(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"amqp://guest:guest@127.0.0.1:5672/":         "amqp://xxxxx@127.0.0.1:5672/",
		"amqps://u:p@rabbit:5671/vh?heartbeat=5":     "amqps://xxxxx@rabbit:5671/vh?...",
		"amqp://rabbit:5672/":                        "amqp://rabbit:5672/",
		"amqp://u:p@ss@rabbit:5672/":                 "amqp://xxxxx@rabbit:5672/",
		"amqp://token@rabbit/?auth_mechanism=PLAIN":  "amqp://xxxxx@rabbit/?...",
		"amqp://user:pa%40ss@rabbit.example.org/vh1": "amqp://xxxxx@rabbit.example.org/vh1",
	} {
		if got := redact.URL(in); got != want {
			t.Errorf("redact.URL(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestNewID(t *testing.T) {
	t.Parallel()
	re := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	seen := map[string]bool{}
	prev := ""
	for i := range 10000 {
		id := newID()
		if !re.MatchString(id) {
			t.Fatalf("id %q is not a UUIDv7", id)
		}
		if seen[id] {
			t.Fatalf("id %q repeated", id)
		}
		seen[id] = true
		if i > 0 && id[:13] < prev[:13] {
			t.Fatalf("id %q sorts before the earlier %q", id, prev)
		}
		prev = id
	}
}

func TestDeliveryHeaders(t *testing.T) {
	t.Parallel()
	for v, want := range map[any]int{int32(3): 3, int64(4): 4, "5": 5, int8(-1): 0, "x": 0, 2.5: 0} {
		if got := priorDeliveries(amqp091.Table{deliveriesHeader: v}); got != want {
			t.Errorf("priorDeliveries(%T %v) = %d, want %d", v, v, got, want)
		}
	}
	if got := priorDeliveries(nil); got != 0 {
		t.Errorf("no header: %d", got)
	}
	at := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	h := stringHeaders(amqp091.Table{
		deliveriesHeader: int64(2), "reason": "bad", "n": int32(7), "ok": true, "at": at, "raw": []byte("b"), "f": 1.5,
	})
	want := map[string]string{"reason": "bad", "n": "7", "ok": "true", "at": "2026-01-02T03:04:05.000000006Z", "raw": "b", "f": "1.5"}
	if len(h) != len(want) {
		t.Errorf("headers %v, want %v", h, want)
	}
	for k, v := range want {
		if h[k] != v {
			t.Errorf("header %s = %q, want %q", k, h[k], v)
		}
	}
	if stringHeaders(amqp091.Table{deliveriesHeader: int64(1)}) != nil {
		t.Error("only bookkeeping: want nil headers")
	}
}
