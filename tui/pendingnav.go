package tui

import (
	"cmp"
	"slices"

	tea "github.com/charmbracelet/bubbletea"

	"github.com/spectacles-go/spectacles/core"
)

// pendingSort is the Pending view's order of rows within a page: the
// broker pages by id, so a page is sorted, not the whole list.
type pendingSort struct {
	col  int // pendSortID, pendSortIdle, …
	desc bool
}

const (
	pendSortID = iota
	pendSortIdle
	pendSortDeliveries
	pendSortConsumer
	numPendingSorts
)

// pendingSortColumn is the table column each order sorts by.
var pendingSortColumn = [numPendingSorts]int{pendSortID: 0, pendSortIdle: 2, pendSortDeliveries: 3, pendSortConsumer: 1}

var pendingSortNames = [numPendingSorts]string{"id", "idle", "deliveries", "consumer"}

// next is the following order: id, idle, deliveries, consumer, id. Idle
// and deliveries start with the largest first, the rows an operator looks
// for.
func (s pendingSort) next() pendingSort {
	col := (s.col + 1) % numPendingSorts
	return pendingSort{col: col, desc: col == pendSortIdle || col == pendSortDeliveries}
}

// arrow marks the sorted column's title.
func (s pendingSort) arrow() string {
	if s.desc {
		return "▼"
	}
	return "▲"
}

// apply sorts page (a copy) by s; id order breaks ties.
func (s pendingSort) apply(page []core.PendingEntry) []core.PendingEntry {
	out := slices.Clone(page)
	slices.SortStableFunc(out, func(a, b core.PendingEntry) int {
		var c int
		switch s.col {
		case pendSortIdle:
			c = cmp.Compare(a.Idle, b.Idle)
		case pendSortDeliveries:
			c = cmp.Compare(a.Deliveries, b.Deliveries)
		case pendSortConsumer:
			c = cmp.Compare(a.Consumer, b.Consumer)
		}
		if c == 0 {
			c = compareIDs(a.ID, b.ID)
		}
		if s.desc {
			return -c
		}
		return c
	})
	return out
}

// titles are the Pending table's column titles with s marked: the column
// sorted by gets ▲ or ▼, and its width grows to hold it.
func (s pendingSort) titles(cols []column) {
	base := [...]string{"ID", "CONSUMER", "IDLE", "DELIVERIES", "PUBLISHED"}
	widths := [...]int{20, 18, 9, 10, 19}
	for i := range cols {
		if i >= len(base) {
			break
		}
		cols[i].title, cols[i].width = base[i], widths[i]
	}
	if s.col == pendSortID && !s.desc {
		return // the broker's order: no mark
	}
	i := pendingSortColumn[s.col]
	cols[i].title += " " + s.arrow()
	cols[i].width = max(cols[i].width, len([]rune(cols[i].title)))
}

// lastPageMsg holds where every page of the filtered list starts, to jump
// to the last.
type lastPageMsg struct {
	gen     uint64
	starts  []string
	offsets []int
	err     error
}

func (lastPageMsg) target() kind { return kPending }

// maxWalk bounds how many pending entries a jump to the last page reads.
const maxWalk = 5_000_000

// lastPage walks the pending list that rule selects, in large pages, and
// returns the start ("after" id) and offset of each page of rows rows.
func lastPage(sh *shared, stream, group string, rule core.PendingRule, rows int, gen uint64) tea.Cmd {
	pi := pendingInspector(sh.backend)
	return func() tea.Msg {
		ctx, cancel := sh.ctx()
		defer cancel()
		msg := lastPageMsg{gen: gen, starts: []string{""}, offsets: []int{0}}
		q := core.PendingQuery{Count: 1000, Consumer: rule.Consumer, MinIdle: rule.MinIdle}
		n := 0
		for read := 0; read < maxWalk; {
			page, err := pi.Pending(ctx, stream, group, q)
			if err != nil {
				msg.err = err
				return msg
			}
			read += len(page)
			for _, p := range page {
				if !rule.Matches(p) {
					continue
				}
				n++
				if n%rows == 0 {
					msg.starts, msg.offsets = append(msg.starts, p.ID), append(msg.offsets, n)
				}
			}
			if len(page) < q.Count {
				break
			}
			q.After = page[len(page)-1].ID
		}
		if n > 0 && n%rows == 0 {
			// The last boundary starts an empty page.
			msg.starts, msg.offsets = msg.starts[:len(msg.starts)-1], msg.offsets[:len(msg.offsets)-1]
		}
		return msg
	}
}
