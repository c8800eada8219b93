package tui

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/charmbracelet/bubbles/key"
	tea "github.com/charmbracelet/bubbletea"

	"github.com/spectacles-go/spectacles/gateway/restproxy"
	"github.com/spectacles-go/spectacles/internal/termtext"
)

// The Buckets view shows the REST proxy's live rate limits (Node.
// ReadBuckets: the Redis store that proxies with PROXY_RATELIMIT_STORE=redis
// share): each bucket's limit, remaining requests, reset and whether a
// request holds it, and the latest 429s.

// maxRecentShown bounds the 429s listed below the buckets.
const maxRecentShown = 8

type bucketsResult struct {
	seq, gen uint64
	snap     restproxy.Snapshot
	none     bool // no source of buckets
	err      error
	at       time.Time
}

func (bucketsResult) target() kind { return kBuckets }

var bucketCols = []column{
	{title: "TOKEN", width: 16},
	{title: "BUCKET", width: 30, flex: true},
	{title: "RESOURCE", width: 20, flex: true},
	{title: "LIMIT", width: 6, right: true},
	{title: "REMAINING", width: 9, right: true},
	{title: "RESET IN", width: 9, right: true},
	{title: "HELD", width: 5},
}

type bucketsView struct {
	viewBase
	sh            *shared
	load          loader
	snap          restproxy.Snapshot
	none          bool
	filter        string
	t             table
	width, height int
	k             struct{ Up, Down key.Binding }
}

func newBuckets(sh *shared) *bucketsView {
	v := &bucketsView{sh: sh}
	v.t = newTable(sh.st, bucketCols...)
	v.t.empty = "no buckets in the store yet: the proxy learns them from Discord's answers"
	v.k.Up = bindAs("↑/k", "up", "up", "k")
	v.k.Down = bindAs("↓/j", "down", "down", "j")
	return v
}

func (v *bucketsView) crumbs() []string {
	if v.filter != "" {
		return []string{"filter " + termtext.Quote(v.filter)}
	}
	return nil
}

func (v *bucketsView) setSize(w, h int) {
	v.width, v.height = w, h
	recent := 0
	if n := len(v.snap.Recent); n > 0 {
		recent = min(n, maxRecentShown) + 2
	}
	v.t.setSize(w, max(h-recent-1, 3))
}

func (v *bucketsView) activate() tea.Cmd  { return v.refresh() }
func (v *bucketsView) updated() time.Time { return v.load.at }
func (v *bucketsView) capturing() bool    { return false }
func (v *bucketsView) canFilter() bool    { return true }
func (v *bucketsView) filterText() string { return v.filter }
func (v *bucketsView) filterSyntax() string {
	return "text: the buckets whose route, hash or resource contains it (any case), e.g. /channels"
}

func (v *bucketsView) setFilter(text string) tea.Cmd {
	v.filter = text
	v.fill()
	return nil
}

func (v *bucketsView) refresh() tea.Cmd {
	seq, gen, ok := v.load.begin()
	if !ok {
		return nil
	}
	sh := v.sh
	br, _ := sh.backend.(bucketReader)
	return func() tea.Msg {
		r := bucketsResult{seq: seq, gen: gen}
		if br == nil {
			r.none, r.at = true, sh.now()
			return r
		}
		ctx, cancel := sh.ctx()
		defer cancel()
		r.snap, r.err = br.Buckets(ctx)
		if errors.Is(r.err, errNoBuckets) {
			r.none, r.err = true, nil
		}
		r.at = sh.now()
		return r
	}
}

func (v *bucketsView) keys() []key.Binding { return []key.Binding{v.k.Up, v.k.Down} }

func (v *bucketsView) update(msg tea.Msg) tea.Cmd {
	switch msg := msg.(type) {
	case bucketsResult:
		apply, again := v.load.finish(msg.seq, msg.gen)
		if apply {
			v.load.err, v.load.loaded, v.load.at = msg.err, true, msg.at
			v.none = msg.none
			if msg.err == nil {
				v.snap = msg.snap
				v.fill()
				v.setSize(v.width, v.height) // room for the 429s below
			}
		}
		if again {
			return v.refresh()
		}
	case tea.KeyMsg:
		switch {
		case key.Matches(msg, v.k.Up):
			v.t.move(-1)
		case key.Matches(msg, v.k.Down):
			v.t.move(1)
		}
	}
	return nil
}

func (v *bucketsView) fill() {
	now := v.sh.now()
	f := strings.ToLower(v.filter)
	var rows [][]string
	var keys []string
	for _, b := range v.snap.Buckets {
		// Key: identity hash, bucket (route or #hash) and resource.
		parts := strings.SplitN(b.Key, "|", 3)
		for len(parts) < 3 {
			parts = append(parts, "")
		}
		if f != "" && !strings.Contains(strings.ToLower(parts[1]+"\x00"+parts[2]), f) {
			continue
		}
		limit, remaining, reset := fmt.Sprint(b.Limit), fmt.Sprint(b.Remaining), "-"
		if b.Unlimited {
			limit, remaining = "none", "-"
		}
		if b.ResetAt != nil {
			if d := b.ResetAt.Sub(now); d > 0 {
				reset = fmtDuration(d)
			}
		}
		held := ""
		if b.InFlight {
			held = "yes"
		}
		rows = append(rows, []string{termtext.Escape(parts[0]), termtext.Escape(parts[1]), termtext.Escape(parts[2]), limit, remaining, reset, held})
		keys = append(keys, b.Key)
	}
	v.t.setRows(rows, keys)
}

func (v *bucketsView) view() string {
	st := v.sh.st
	if !v.load.loaded {
		return " " + st.muted.Render("loading the proxy's buckets…")
	}
	if v.none {
		return " " + st.muted.Render("No source of REST proxy buckets: the console reads the Redis store that proxies share with PROXY_RATELIMIT_STORE=redis (on this broker's Redis, or REDIS_URL). A proxy with the memory store shows its own: spectacles buckets --address ITS_PROMETHEUS_ADDRESS.")
	}
	var b strings.Builder
	if v.load.err != nil {
		b.WriteString(" " + st.bad.Render("✗ "+v.sh.errText(v.load.err)) + "\n")
	}
	summary := fmt.Sprintf("%d buckets · %d invalid requests in 10 min (401/403/429)", len(v.snap.Buckets), v.snap.InvalidCount)
	if v.snap.BannedUntil != nil {
		summary += " · BANNED by Cloudflare until " + v.snap.BannedUntil.In(v.sh.loc).Format("15:04:05")
	}
	b.WriteString(" " + st.muted.Render(summary) + "\n")
	b.WriteString(v.t.view())
	if len(v.snap.Recent) > 0 {
		b.WriteString("\n\n " + st.title.Render("Latest 429s") + "\n")
		recent := v.snap.Recent
		if len(recent) > maxRecentShown {
			recent = recent[len(recent)-maxRecentShown:]
		}
		for i := len(recent) - 1; i >= 0; i-- { // newest first
			e := recent[i]
			line := fmt.Sprintf(" %s  %-7s %s  retry after %s", e.At.In(v.sh.loc).Format("15:04:05"), termtext.Escape(e.Scope),
				termtext.Escape(e.Route), fmtDuration(time.Duration(e.RetryAfterMS*float64(time.Millisecond))))
			b.WriteString(truncate(line, v.width) + "\n")
		}
	}
	return strings.TrimRight(b.String(), "\n")
}
