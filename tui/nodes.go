package tui

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spectacles-go/spectacles/gateway"
)

// nodeStaleAfter is the age of a gateway node's last report after which
// the console shows it as STALE (nodes report every 2 s).
const nodeStaleAfter = gateway.NodeStaleAfter

// remoteWhy is why shard control does not apply to a remote node's shard.
const remoteWhy = "runs in another process: use that node"

// loadNodes reads the statuses gateway nodes publish, when the node has a
// source of them. Call it from a command, never from Update or View.
func loadNodes(sh *shared) ([]gateway.NodeStatus, error) {
	if !sh.node.GatewayNodes {
		return nil, nil
	}
	ctx, cancel := sh.ctx()
	defer cancel()
	return sh.backend.GatewayNodes(ctx)
}

// nodeName is how the console names a gateway node: group/client.
func nodeName(n gateway.NodeStatus) string { return n.Group + "/" + n.Client }

// nodeStale reports a node whose last report is older than nodeStaleAfter
// at time at.
func nodeStale(n gateway.NodeStatus, at time.Time) bool { return n.Stale(at) }

// shardTally counts shards by state; stale counts the shards of stale
// nodes, whose state is no longer known.
type shardTally struct {
	total, ready, resuming, failed, stopped, stale int
}

func (t *shardTally) add(list []gateway.Status, stale bool) {
	for _, s := range list {
		t.total++
		switch {
		case stale:
			t.stale++
		case s.State == gateway.Ready:
			t.ready++
		case s.State == gateway.Failed:
			t.failed++
		case s.State == gateway.Resuming, s.State == gateway.Reconnecting, s.State == gateway.Connecting,
			s.State == gateway.Identifying, s.State == gateway.WaitingIdentify:
			t.resuming++
		default:
			t.stopped++
		}
	}
}

// text renders the tally: "4 shards: 3 ready, 0 resuming, 1 failed".
func (t shardTally) text(st *styles) string {
	s := fmt.Sprintf("%d shards: ", t.total) + st.good.Render(fmt.Sprintf("%d ready", t.ready)) + ", "
	if t.resuming > 0 {
		s += st.warn.Render(fmt.Sprintf("%d resuming", t.resuming))
	} else {
		s += "0 resuming"
	}
	s += ", "
	if t.failed > 0 {
		s += st.bad.Render(fmt.Sprintf("%d failed", t.failed))
	} else {
		s += "0 failed"
	}
	if t.stopped > 0 {
		s += fmt.Sprintf(", %d stopped", t.stopped)
	}
	if t.stale > 0 {
		s += ", " + st.warn.Render(fmt.Sprintf("%d STALE", t.stale))
	}
	return s
}

// nodeWarnings are the overview's warnings about gateway nodes: stale
// nodes and failed shards.
func nodeWarnings(sh *shared, nodes []gateway.NodeStatus, at time.Time) []string {
	var out []string
	for _, n := range nodes {
		if nodeStale(n, at) {
			out = append(out, fmt.Sprintf("gateway node %s is STALE: no report for %s (stopped, or cannot reach Redis)",
				nodeName(n), fmtDuration(at.Sub(n.UpdatedAt).Truncate(time.Second))))
			continue
		}
		for _, s := range n.Shards {
			if s.State == gateway.Failed {
				out = append(out, fmt.Sprintf("shard %d of %s failed: %s", s.ID, nodeName(n), sh.backend.Redact(s.Err)))
			}
		}
	}
	return out
}

// nodesShardCount is the bot's shard count as the gateway nodes report
// it: that of the nodes reporting now (else of the stale ones), with where
// it comes from; an error when they disagree, or none knows it.
func nodesShardCount(nodes []gateway.NodeStatus, at time.Time) (int, string, error) {
	pick := func(stale bool) ([]int, []string) {
		var counts []int
		var names []string
		for _, n := range nodes {
			if n.ShardCount > 0 && nodeStale(n, at) == stale {
				if !slices.Contains(counts, n.ShardCount) {
					counts = append(counts, n.ShardCount)
				}
				names = append(names, nodeName(n))
			}
		}
		return counts, names
	}
	counts, names := pick(false)
	suffix := ""
	if len(counts) == 0 {
		counts, names = pick(true)
		suffix = " (STALE)"
	}
	switch {
	case len(counts) == 0:
		return 0, "", nil
	case len(counts) > 1:
		slices.Sort(counts)
		text := make([]string, len(counts))
		for i, c := range counts {
			text[i] = fmt.Sprint(c)
		}
		return 0, "", fmt.Errorf("gateway nodes report different shard counts (%s): type the bot's shard count", strings.Join(text, ", "))
	case len(names) == 1:
		return counts[0], "gateway node " + names[0] + suffix, nil
	}
	return counts[0], plural(len(names), "gateway node") + suffix, nil
}
