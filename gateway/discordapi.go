package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// ErrUnauthorized is returned when Discord rejects the bot token.
var ErrUnauthorized = errors.New("discord rejected the bot token (401)")

// GatewayBot is the answer of GET /gateway/bot.
type GatewayBot struct {
	URL               string `json:"url"`
	Shards            int    `json:"shards"`
	SessionStartLimit struct {
		Total          int `json:"total"`
		Remaining      int `json:"remaining"`
		ResetAfter     int `json:"reset_after"` // milliseconds
		MaxConcurrency int `json:"max_concurrency"`
	} `json:"session_start_limit"`
}

// APIBase builds the REST base URL from spec-tacles/gateway's
// DISCORD_API_PROTOCOL, DISCORD_API_HOST and DISCORD_API_VERSION, with
// Discord's values as defaults ("https", "discord.com", 10).
func APIBase(protocol, host string, version int) string {
	if protocol == "" {
		protocol = "https"
	}
	if host == "" {
		host = "discord.com"
	}
	if version == 0 {
		version = 10
	}
	return fmt.Sprintf("%s://%s/api/v%d", strings.TrimSuffix(protocol, "://"), strings.TrimSuffix(host, "/"), version)
}

// FetchGatewayBot asks Discord for the gateway URL, the recommended shard
// count and the session start limit. Errors never contain the token.
func FetchGatewayBot(ctx context.Context, client *http.Client, apiBase, token string) (GatewayBot, error) {
	var gb GatewayBot
	if client == nil {
		client = &http.Client{Timeout: 15 * time.Second}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(apiBase, "/")+"/gateway/bot", nil)
	if err != nil {
		return gb, fmt.Errorf("gateway/bot: %w", err)
	}
	req.Header.Set("Authorization", "Bot "+token)
	req.Header.Set("User-Agent", "DiscordBot (https://github.com/spectacles-go/spectacles, 1) spectacles")
	resp, err := client.Do(req)
	if err != nil {
		return gb, fmt.Errorf("gateway/bot: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	switch {
	case resp.StatusCode == http.StatusUnauthorized:
		return gb, ErrUnauthorized
	case resp.StatusCode != http.StatusOK:
		return gb, fmt.Errorf("gateway/bot: HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(body[:min(len(body), 200)])))
	}
	if err := json.Unmarshal(body, &gb); err != nil {
		return gb, fmt.Errorf("gateway/bot: %w", err)
	}
	if gb.URL == "" || gb.Shards < 1 {
		return gb, fmt.Errorf("gateway/bot: incomplete answer (url %q, shards %d)", gb.URL, gb.Shards)
	}
	return gb, nil
}
