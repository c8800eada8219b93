package amqp

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
)

// TestInstancesFromManagementAnswers reads instances from management API
// answers as RabbitMQ gives them, a closing consumer's channel_details
// being [] rather than an object, and connections of other clients
// without the presence property.
func TestInstancesFromManagementAnswers(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/api/vhosts/%2F/connections", "/api/vhosts///connections":
			_, _ = w.Write([]byte(`[{"name":"c1","client_properties":{"spectacles_presence":"{\"group\":\"audit\",\"client\":\"w1\",\"version\":\"1.0\",\"calls\":[\"REQ\"],\"session\":\"s1\",\"exchange\":\"gw\",\"subgroup\":\"audit\"}"}},
				{"name":"c2","client_properties":{"product":"other"}}]`))
		case "/api/consumers/%2F", "/api/consumers//":
			_, _ = w.Write([]byte(`[{"queue":{"name":"gw:audit:MESSAGE_CREATE"},"channel_details":{"connection_name":"c1"}},
				{"queue":{"name":"gw:audit:REQ"},"channel_details":{"connection_name":"c1"}},
				{"queue":{"name":"gw:audit:GONE"},"channel_details":[]},
				{"queue":{"name":"gw:other:X"},"channel_details":{"connection_name":"c2"}}]`))
		default:
			t.Errorf("unexpected request %s", r.URL.Path)
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	cfg := Config{URL: "amqp://guest:guest@127.0.0.1:5672/", ManagementURL: srv.URL}
	m, err := newMgmt(&cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer m.close()
	b := &Broker{cfg: cfg}
	b.insp.m = m
	list, err := b.Instances(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 {
		t.Fatalf("instances %+v, want audit/w1 only", list)
	}
	in := list[0]
	if in.Group != "audit" || in.Client != "w1" || in.Version != "1.0" || in.Session != "s1" ||
		!slices.Equal(in.Events, []string{"MESSAGE_CREATE", "REQ"}) || !slices.Equal(in.Calls, []string{"REQ"}) {
		t.Errorf("instance %+v", in)
	}
}
