package restproxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spectacles-go/spectacles/gateway/simulator"
)

func httpSide(t *testing.T, fakeCfg simulator.RESTConfig, cfg Config) (*simulator.REST, string) {
	t.Helper()
	rest, base := fake(t, fakeCfg)
	p := newProxy(t, base, cfg)
	srv := httptest.NewServer(NewHTTPHandler(p, HTTPConfig{}))
	t.Cleanup(srv.Close)
	return rest, srv.URL
}

func hdo(t *testing.T, method, url, auth, body string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res, string(b)
}

func TestHTTPSide(t *testing.T) {
	defer http.DefaultClient.CloseIdleConnections()
	other := "other-bot-token"
	rest, addr := httpSide(t, simulator.RESTConfig{TimeScale: 0.04, Tokens: []string{other}}, Config{}) // 5 per 200 ms
	res, body := hdo(t, "GET", addr+"/api/v10/users/@me", testBot, "")
	if res.StatusCode != 200 || res.Header.Get("X-Ratelimit-Bucket") == "" || res.Header.Get(MarkerHeader) != "" || !strings.Contains(body, `"id"`) {
		t.Fatalf("%d %v %s", res.StatusCode, res.Header, body)
	}
	// A burst over the bucket's limit: queued, never a 429.
	path := addr + "/api/v10/channels/" + chanID(1) + "/messages"
	var wg sync.WaitGroup
	for i := 0; i < 12; i++ {
		wg.Go(func() {
			if res, body := hdo(t, "POST", path, testBot, `{"content":"x"}`); res.StatusCode != 200 {
				t.Errorf("%d %s", res.StatusCode, body)
			}
		})
	}
	// Another bot's limits are its own.
	wg.Go(func() {
		if res, _ := hdo(t, "POST", path, "Bot "+other, `{}`); res.StatusCode != 200 {
			t.Errorf("other bot: %d", res.StatusCode)
		}
	})
	wg.Wait()
	if s := rest.Stats(); s.ByStatus[429] != 0 {
		t.Fatalf("429s: %+v", s)
	}
	// Bearer tokens, webhooks without authorization, the caller's version.
	if res, _ := hdo(t, "GET", addr+"/api/v9/users/@me", "Bearer oauth", ""); res.StatusCode != 200 {
		t.Fatalf("bearer: %d", res.StatusCode)
	}
	if res, _ := hdo(t, "POST", addr+"/api/v10/webhooks/"+chanID(2)+"/"+simulator.DefaultWebhookToken+"?wait=true", "", `{"content":"x"}`); res.StatusCode != 200 {
		t.Fatalf("webhook: %d", res.StatusCode)
	}
	recs := rest.Requests()
	if recs[len(recs)-2].Path != "/api/v9/users/@me" || recs[len(recs)-1].RawQuery != "wait=true" {
		t.Fatalf("records %+v %+v", recs[len(recs)-2], recs[len(recs)-1])
	}
	// Discord's own errors pass through unmarked.
	if res, _ := hdo(t, "GET", addr+"/api/v10/users/@me", "Bot wrong", ""); res.StatusCode != 401 || res.Header.Get(MarkerHeader) != "" {
		t.Fatalf("401: %d %v", res.StatusCode, res.Header)
	}
	if res, _ := hdo(t, "GET", addr+"/nope", testBot, ""); res.StatusCode != 404 || res.Header.Get(MarkerHeader) != "invalid-request" {
		t.Fatalf("outside /api: %d %v", res.StatusCode, res.Header)
	}
}

func TestHTTPSideTimeoutIsMarked(t *testing.T) {
	defer http.DefaultClient.CloseIdleConnections()
	rest, addr := httpSide(t, simulator.RESTConfig{}, Config{Timeout: 300 * time.Millisecond}) // 5 per 5 s
	path := addr + "/api/v10/channels/" + chanID(1) + "/messages"
	for i := 0; i < 5; i++ {
		hdo(t, "POST", path, testBot, `{}`)
	}
	res, body := hdo(t, "POST", path, testBot, `{}`)
	if res.StatusCode != http.StatusGatewayTimeout || res.Header.Get(MarkerHeader) != "timeout" || !strings.Contains(body, "not sent") {
		t.Fatalf("%d %v %s", res.StatusCode, res.Header, body)
	}
	if s := rest.Stats(); s.Requests != 5 {
		t.Fatalf("the fake saw %d requests, want 5", s.Requests)
	}
}
