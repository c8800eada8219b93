package restproxy

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"
)

// DetectGlobalLimit reads GET /gateway/bot with authorization and derives
// the bot's global limit from session_start_limit.max_concurrency, as nirn
// and ssMMiles do (Discord documents no number): 50 when it is 1, else
// max(500, 25 × max_concurrency).
func DetectGlobalLimit(ctx context.Context, client *http.Client, apiBase, authorization string) (int, error) {
	if client == nil {
		client = http.DefaultClient
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, apiBase+"/gateway/bot", nil)
	if err != nil {
		return 0, fmt.Errorf("restproxy: global limit detection: %w", err)
	}
	req.Header.Set("Authorization", authorization)
	req.Header.Set("User-Agent", DefaultUserAgent)
	res, err := client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("restproxy: global limit detection: %s", describeTransport(err))
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if err != nil {
		return 0, fmt.Errorf("restproxy: global limit detection: %s", describeTransport(err))
	}
	if res.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("restproxy: global limit detection: GET /gateway/bot answered %d", res.StatusCode)
	}
	var doc struct {
		SessionStartLimit struct {
			MaxConcurrency int `json:"max_concurrency"`
		} `json:"session_start_limit"`
	}
	if err := json.Unmarshal(body, &doc); err != nil || doc.SessionStartLimit.MaxConcurrency < 1 {
		return 0, fmt.Errorf("restproxy: global limit detection: no session_start_limit.max_concurrency in GET /gateway/bot")
	}
	if mc := doc.SessionStartLimit.MaxConcurrency; mc > 1 {
		return max(500, 25*mc), nil
	}
	return 50, nil
}
