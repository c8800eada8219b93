package tui

import (
	"context"
	"testing"
	"time"

	"github.com/spectacles-go/spectacles/gateway/restproxy"
)

func TestBucketsViewShowsLimitsAndRecent429s(t *testing.T) {
	ins, b, gw := fixture()
	node := testNode(ins, b, gw)
	reset := fixedNow.Add(1500 * time.Millisecond)
	node.ReadBuckets = func(context.Context) (restproxy.Snapshot, error) {
		return restproxy.Snapshot{
			Buckets: []restproxy.BucketState{
				{Key: "97fd7d0264ccafe4|#86a82aac06df9d53|channel:123", Limit: 5, Remaining: 4, ResetAt: &reset, InFlight: true},
				{Key: "97fd7d0264ccafe4|GET /gateway/bot|", Unlimited: true},
				{Key: "97fd7d0264ccafe4|POST /channels/\x1b[2J/messages|", Limit: 5, Remaining: 5},
			},
			Recent:       []restproxy.RateLimitEvent{{At: fixedNow.Add(-time.Second), Route: "PUT /channels/123/messages/!/reactions", Scope: "shared", RetryAfterMS: 250}},
			InvalidCount: 3,
		}, nil
	}
	d := newDriver(t, node, plainOptions(), 140, 30)
	d.keys("0")
	d.mustContain("[0 Buckets]", "3 buckets · 3 invalid requests in 10 min", "#86a82aac06df9d53", "channel:123", "1.5s", "yes",
		"GET /gateway/bot", "none", "Latest 429s", "shared", "PUT /channels/123/messages/!/reactions", "retry after 250ms")
	d.mustNotContain("\x1b[2J") // names from the broker are escaped
	d.keys("/")
	d.typeText("gateway")
	d.keys("enter")
	d.mustNotContain("#86a82aac06df9d53")
	d.mustContain("GET /gateway/bot")
	d.keys("esc", "1")
	d.command("buckets")
	d.mustContain("[0 Buckets]")
}

func TestBucketsViewWithoutASource(t *testing.T) {
	ins, b, gw := fixture()
	d := newDriver(t, testNode(ins, b, gw), plainOptions(), 140, 30)
	d.keys("0")
	d.mustContain("No source of REST proxy buckets")
}
