package brokertest

import (
	"context"
	"errors"
	"testing"
)

func TestFindServer(t *testing.T) {
	const env = "SPECTACLES_BROKERTEST_URL"
	pinged := ""
	ping := func(_ context.Context, addr string) error { pinged = addr; return nil }

	t.Setenv(env, "off")
	if _, err := FindServer(env, "def:1", "off", ping); !errors.Is(err, ErrOff) || pinged != "" {
		t.Errorf("off: err = %v, pinged %q; want ErrOff and no ping", err, pinged)
	}
	t.Setenv(env, "")
	if addr, err := FindServer(env, "def:1", "off", ping); err != nil || addr != "def:1" || pinged != "def:1" {
		t.Errorf("empty: %q, %v (pinged %q); want the default", addr, err, pinged)
	}
	t.Setenv(env, "host:2")
	down := errors.New("no server")
	if _, err := FindServer(env, "def:1", "off", func(context.Context, string) error { return down }); !errors.Is(err, down) {
		t.Errorf("unanswered ping: err = %v", err)
	}
}

func TestProbeFindsOnce(t *testing.T) {
	var p Probe
	calls := 0
	find := func() (string, error) { calls++; return "a", nil }
	for range 3 {
		if addr, err := p.Find(find); addr != "a" || err != nil {
			t.Fatalf("Find = %q, %v", addr, err)
		}
	}
	if calls != 1 {
		t.Errorf("find ran %d times, want once", calls)
	}
}
