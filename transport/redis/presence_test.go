package redis

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/internal/brokertest"

	"github.com/spectacles-go/spectacles/core/conformance"
)

func TestPresence(t *testing.T) {
	t.Parallel()
	url, real := serverURL(t)
	conformance.RunPresence(t, setupFor(t, url, blockFor(real), allFeatures, nil))
}

// TestPresenceExpired: an instance whose TTL key expired (its process was
// killed without a word) is reported once, by whoever sweeps first, as
// disconnected ("expired") and, being its group's last, offline; Instances
// returns it, if it swept it, one last time and stale.
func TestPresenceExpired(t *testing.T) {
	t.Parallel()
	url, real := serverURL(t)
	raw := rawClient(t, url)
	grp := unique("dead")
	session := unique("session")
	dead := core.Instance{Group: grp, Client: "killed", Session: session, TTLMs: 1000,
		StartedAt: time.Now().Add(-time.Minute), LastSeen: time.Now().Add(-30 * time.Second)}
	js, _ := json.Marshal(dead)
	ctx := ctxT(t)
	if err := raw.HSet(ctx, instancesKey, session, js).Err(); err != nil {
		t.Fatal(err)
	}
	if err := raw.SAdd(ctx, groupKey(grp), session).Err(); err != nil {
		t.Fatal(err)
	}
	deleteKeys(t, raw, groupKey(grp))
	t.Cleanup(func() { raw.HDel(context.Background(), instancesKey, session) })

	o := opts(t, unique("watch"), "w")
	o.Announce.Disabled = true // it would sweep when it joins: only Instances does here
	w := openBroker(t, url, Config{Options: o, Block: blockFor(real)})
	got := make(chan core.PresenceEvent, 16)
	brokertest.StartConsume(t, w, []string{core.EventInstanceDisconnected, core.EventGroupOffline}, func(ctx context.Context, m *core.Message) {
		var pe core.PresenceEvent
		if err := m.Decode(&pe); err != nil {
			t.Error(err)
		}
		_ = m.Ack(ctx)
		if pe.Instance.Group == grp {
			got <- pe
		}
	})
	list, err := w.Instances(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Another test's client may have swept it first (every joining
	// instance sweeps): then it is not listed, but reported all the same.
	for _, in := range list {
		if in.Session == session && !in.Stale(time.Now()) {
			t.Errorf("the dead instance is not stale: %+v", in)
		}
	}
	want := map[string]bool{core.EventInstanceDisconnected: true, core.EventGroupOffline: true} // two streams: any order
	for len(want) > 0 {
		select {
		case pe := <-got:
			if !want[pe.Event] || pe.Reason != "expired" || pe.Instance.Client != "killed" {
				t.Fatalf("got %+v, want one of %v, expired", pe, want)
			}
			delete(want, pe.Event)
		case <-time.After(brokertest.Wait):
			t.Fatalf("not reported: %v", want)
		}
	}
	// A second sweep finds nothing to report.
	if list, err = w.Instances(ctx); err != nil {
		t.Fatal(err)
	}
	for _, in := range list {
		if in.Session == session {
			t.Errorf("the dead instance is listed again")
		}
	}
	select {
	case pe := <-got:
		t.Errorf("reported twice: %+v", pe)
	case <-time.After(time.Second):
	}
}
