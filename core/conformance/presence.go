package conformance

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/spectacles-go/spectacles/core"
)

// RunPresence checks a broker's presence (core.PresenceReader and the
// presence events): two instances of a group join and leave; each join
// and leave is an instance event, the first join and the last leave a
// group event, each once (a departure by Close with the reason "closed");
// Instances lists the live ones with their
// version, events and calls. s.New must give clients that implement
// core.PresenceReader.
func RunPresence(t *testing.T, s Setup) {
	t.Helper()
	if s.MessageTimeout <= 0 {
		s.MessageTimeout = 400 * time.Millisecond
	}
	st := &suite{Setup: s}
	ev := st.event(t)
	grp := group("presence")
	events := make(chan core.PresenceEvent, 64)
	watcher := st.client(t, group("watch"), "w")
	consume(t, watcher, core.PresenceEvents(), func(ctx context.Context, m *core.Message) {
		var pe core.PresenceEvent
		if err := m.Decode(&pe); err != nil {
			t.Errorf("presence event %s: %v", m.Event, err)
		}
		_ = m.Ack(ctx)
		if pe.Instance.Group == grp {
			if pe.Event != m.Event {
				t.Errorf("presence event published under %s says it is %s", m.Event, pe.Event)
			}
			events <- pe
		}
	})
	announce := func(o *core.Options) {
		o.Announce = core.Announcement{Version: "conformance-1.2.3", Calls: []string{ev},
			Heartbeat: 200 * time.Millisecond, TTL: 2 * time.Second}
	}
	expect := func(want ...string) {
		t.Helper()
		var got []string
		for range want {
			select {
			case pe := <-events:
				got = append(got, pe.Event+" "+pe.Instance.Client)
				if (pe.Event == core.EventInstanceDisconnected || pe.Event == core.EventGroupOffline) && pe.Reason != "closed" {
					t.Errorf("%s of %s after Close: reason %q, want closed", pe.Event, pe.Instance.Client, pe.Reason)
				}
			case <-time.After(wait):
				t.Fatalf("presence events %v, want %v", got, want)
			}
		}
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Fatalf("presence events %v, want %v", got, want)
		}
	}
	noMore := func() {
		t.Helper()
		select {
		case pe := <-events:
			t.Fatalf("unexpected presence event %s %s", pe.Event, pe.Instance.Client)
		case <-time.After(2 * s.MessageTimeout):
		}
	}
	a := st.client(t, grp, "a", announce)
	consume(t, a, []string{ev}, func(ctx context.Context, m *core.Message) { _ = m.Ack(ctx) })
	expect(core.EventInstanceConnected+" a", core.EventGroupOnline+" a")
	b := st.client(t, grp, "b", announce)
	consume(t, b, []string{ev}, func(ctx context.Context, m *core.Message) { _ = m.Ack(ctx) })
	expect(core.EventInstanceConnected + " b")
	noMore()

	pr, ok := watcher.(core.PresenceReader)
	if !ok {
		t.Fatalf("%T is not a core.PresenceReader", watcher)
	}
	list, err := pr.Instances(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, in := range list {
		if in.Group != grp {
			continue
		}
		seen[in.Client] = true
		if in.Version != "conformance-1.2.3" || !slices.Equal(in.Events, []string{ev}) || !slices.Equal(in.Calls, []string{ev}) {
			t.Errorf("instance %+v: want version conformance-1.2.3, events and calls [%s]", in, ev)
		}
		if in.Stale(time.Now()) {
			t.Errorf("live instance %s is stale: last seen %s", in.Client, in.LastSeen)
		}
	}
	if !seen["a"] || !seen["b"] || len(seen) != 2 {
		t.Errorf("instances of %s: %v, want a and b", grp, seen)
	}

	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	expect(core.EventInstanceDisconnected + " a")
	noMore()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	expect(core.EventInstanceDisconnected+" b", core.EventGroupOffline+" b")
	noMore()
}
