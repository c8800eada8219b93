package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/spectacles-go/spectacles/gateway/restproxy"
	"github.com/spectacles-go/spectacles/gateway/restproxy/redisstore"
	"github.com/spectacles-go/spectacles/internal/termtext"
)

// bucketsJSON is `buckets --json`: the REST proxy's live rate limits.
type bucketsJSON struct {
	// Source is "redis" or the admin URL read.
	Source       string          `json:"source"`
	BucketCount  int             `json:"bucket_count"`
	Buckets      []bucketJSON    `json:"buckets"`
	Recent       []rateLimitJSON `json:"recent_429s"`
	InvalidCount int             `json:"invalid_count"`
	BanEndsAt    string          `json:"ban_ends_at,omitempty"`
}

// bucketJSON is one bucket. Identity is a hash of the token, never the
// token; bucket is a route ("POST /channels/:id/messages") before Discord
// named its hash, then "#HASH".
type bucketJSON struct {
	Identity     string  `json:"identity"`
	Bucket       string  `json:"bucket"`
	Resource     string  `json:"resource"`
	Limit        int     `json:"limit"`
	Remaining    int     `json:"remaining"`
	ResetAt      string  `json:"reset_at,omitempty"`
	ResetAfterMS *millis `json:"reset_after_ms,omitempty"`
	InFlight     bool    `json:"in_flight"`
	Unlimited    bool    `json:"unlimited"`
}

// rateLimitJSON is one recent 429.
type rateLimitJSON struct {
	SeenAt       string `json:"seen_at"`
	Route        string `json:"route"`
	Scope        string `json:"scope"`
	RetryAfterMS millis `json:"retry_after_ms"`
}

func newBucketsJSON(source string, snap restproxy.Snapshot, now time.Time) bucketsJSON {
	out := bucketsJSON{Source: source, BucketCount: len(snap.Buckets), InvalidCount: snap.InvalidCount,
		Buckets: mapViews(snap.Buckets, func(b restproxy.BucketState) bucketJSON {
			parts := strings.SplitN(b.Key, "|", 3)
			for len(parts) < 3 {
				parts = append(parts, "")
			}
			j := bucketJSON{Identity: parts[0], Bucket: parts[1], Resource: parts[2], Limit: b.Limit, Remaining: b.Remaining,
				InFlight: b.InFlight, Unlimited: b.Unlimited}
			if b.ResetAt != nil {
				j.ResetAt = b.ResetAt.UTC().Format(time.RFC3339Nano)
				if d := b.ResetAt.Sub(now); d > 0 {
					m := millis(d)
					j.ResetAfterMS = &m
				}
			}
			return j
		}),
		Recent: mapViews(snap.Recent, func(e restproxy.RateLimitEvent) rateLimitJSON {
			return rateLimitJSON{SeenAt: e.At.UTC().Format(time.RFC3339Nano), Route: e.Route, Scope: e.Scope,
				RetryAfterMS: millis(time.Duration(e.RetryAfterMS * float64(time.Millisecond)))}
		}),
	}
	if snap.BannedUntil != nil {
		out.BanEndsAt = snap.BannedUntil.UTC().Format(time.RFC3339Nano)
	}
	return out
}

// maxAdminBytes bounds the document read from a proxy's admin endpoint.
const maxAdminBytes = 64 << 20

func (a *app) bucketsCommand() *cobra.Command {
	var (
		asJSON  bool
		address string
		prefix  string
	)
	cmd := &cobra.Command{
		Use:   "buckets [--address HOST:PORT] [--json]",
		Short: "Show the REST proxy's live rate-limit buckets and recent 429s",
		Long: `buckets shows the rate limits the REST proxy holds: each bucket's token
(a hash, never the token), route or bucket hash, top-level resource, limit,
remaining requests and reset, and the recent 429s. With --address it asks
one proxy's admin endpoint (its PROMETHEUS_ADDRESS, GET /buckets); without,
it reads the Redis store shared by proxies running with
PROXY_RATELIMIT_STORE=redis (REDIS_URL, --prefix), which keeps the latest 50
429s of all of them.`,
		Example: `  spectacles buckets --json
  spectacles buckets --address 127.0.0.1:9100`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) (err error) {
			ctx := cmd.Context()
			now := time.Now()
			var snap restproxy.Snapshot
			var source string
			if address != "" {
				source = "http://" + address + "/buckets"
				if snap, err = readAdminSnapshot(ctx, source); err != nil {
					return err
				}
			} else {
				source = "redis"
				b, err := a.open(ctx, a.options(a.cfg.Identity()))
				if err != nil {
					return err
				}
				defer closeBroker(b, &err)
				rc, done, err := a.redisStoreClient(b)
				if err != nil {
					return err
				}
				defer done()
				read := bucketsReader(rc, prefix)
				if read == nil {
					return errors.New("buckets: no Redis to read the proxy's store from (set REDIS_URL, or ask a proxy with --address)")
				}
				if snap, err = read(ctx); err != nil {
					return err
				}
			}
			view := newBucketsJSON(source, snap, now)
			return a.output(asJSON, view, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "%d buckets, %d invalid requests in 10 min", view.BucketCount, view.InvalidCount)
				if view.BanEndsAt != "" {
					fmt.Fprintf(w, ", BANNED by Cloudflare until %s", view.BanEndsAt)
				}
				fmt.Fprintln(w)
				if len(view.Buckets) > 0 {
					fmt.Fprintln(w, "IDENTITY\tBUCKET\tRESOURCE\tLIMIT\tREMAINING\tRESET IN\tIN FLIGHT")
				} else if source == "redis" {
					// Not "no limits": a proxy with the memory store keeps its
					// own, which only its admin endpoint shows.
					fmt.Fprintln(w, "(none in the Redis store: a proxy with PROXY_RATELIMIT_STORE=memory keeps its buckets to itself; ask it with --address PROMETHEUS_ADDRESS)")
				}
				for _, b := range view.Buckets {
					reset := "-"
					if b.ResetAfterMS != nil {
						reset = time.Duration(*b.ResetAfterMS).Round(time.Millisecond).String()
					}
					limit := fmt.Sprint(b.Limit)
					if b.Unlimited {
						limit = "none"
					}
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\t%s\t%v\n", b.Identity, termtext.Escape(b.Bucket), termtext.Escape(b.Resource),
						limit, b.Remaining, reset, b.InFlight)
				}
				if len(view.Recent) > 0 {
					fmt.Fprintln(w, "RECENT 429\tROUTE\tSCOPE\tRETRY AFTER")
					for _, e := range view.Recent {
						fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", e.SeenAt, termtext.Escape(e.Route), e.Scope, time.Duration(e.RetryAfterMS).Round(time.Millisecond))
					}
				}
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().StringVar(&address, "address", "", "a proxy's admin address (its PROMETHEUS_ADDRESS) to ask instead of Redis")
	cmd.Flags().StringVar(&prefix, "prefix", redisstore.DefaultPrefix, "prefix of the Redis keys (PROXY_RATELIMIT_PREFIX)")
	return cmd
}

// readAdminSnapshot reads GET /buckets from a proxy.
func readAdminSnapshot(ctx context.Context, url string) (restproxy.Snapshot, error) {
	var snap restproxy.Snapshot
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return snap, usageErrorf("--address: %w", err)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return snap, fmt.Errorf("asking the proxy: %w", err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, maxAdminBytes))
	if err != nil {
		return snap, fmt.Errorf("asking the proxy: %w", err)
	}
	if res.StatusCode != http.StatusOK {
		return snap, fmt.Errorf("the proxy answered %s: %s", res.Status, termtext.Escape(strings.TrimSpace(string(body))))
	}
	if err := json.Unmarshal(body, &snap); err != nil {
		return snap, fmt.Errorf("the proxy's answer is not a bucket list: %w", err)
	}
	return snap, nil
}
