package tui

import (
	"slices"
	"strings"

	"github.com/charmbracelet/x/ansi"

	"github.com/charmbracelet/lipgloss"
)

// column describes one table column. A column with flex shares the width
// left over by the fixed ones; width is then its minimum.
type column struct {
	title string
	width int
	right bool
	flex  bool
}

// table renders rows of plain cells with a cursor and marks. It holds only
// the rows it shows (a page), so its cost does not depend on how much data
// the broker holds.
type table struct {
	st            *styles
	cols          []column
	rows          [][]string
	keys          []string
	styleOf       func(row int) (lipgloss.Style, bool)
	cursor, top   int
	width, height int
	marked        map[string]bool
	focused       bool
	empty         string
	// sortCol is the column the rows are sorted by, marked ↑ or ↓ (desc)
	// in the header; -1 (the default) for none.
	sortCol  int
	sortDesc bool
}

func newTable(st *styles, cols ...column) table {
	return table{st: st, cols: cols, marked: map[string]bool{}, focused: true, sortCol: -1}
}

// setSize sets the size, header row included.
func (t *table) setSize(w, h int) {
	t.width, t.height = w, max(h, 2)
	t.clamp()
}

// pageRows is how many rows fit under the header.
func (t *table) pageRows() int { return max(t.height-1, 1) }

// setRows replaces the rows; keys identify rows for marks (and keep the
// cursor on the same key when it is still there).
func (t *table) setRows(rows [][]string, keys []string) {
	var current string
	if t.cursor >= 0 && t.cursor < len(t.keys) {
		current = t.keys[t.cursor]
	}
	t.rows, t.keys = rows, keys
	if current != "" {
		for i, k := range keys {
			if k == current {
				t.cursor = i
				break
			}
		}
	}
	t.clamp()
}

func (t *table) clamp() {
	if t.cursor >= len(t.rows) {
		t.cursor = len(t.rows) - 1
	}
	if t.cursor < 0 {
		t.cursor = 0
	}
	page := t.pageRows()
	if t.cursor < t.top {
		t.top = t.cursor
	}
	if t.cursor >= t.top+page {
		t.top = t.cursor - page + 1
	}
	if t.top > max(len(t.rows)-page, 0) {
		t.top = max(len(t.rows)-page, 0)
	}
	if t.top < 0 {
		t.top = 0
	}
}

// move moves the cursor by n rows and reports whether it tried to go past
// the first (-1) or last (+1) row.
func (t *table) move(n int) int {
	want := t.cursor + n
	t.cursor = want
	t.clamp()
	switch {
	case want < 0:
		return -1
	case want >= len(t.rows):
		return 1
	}
	return 0
}

// selectedKey is the key of the row under the cursor, or "".
func (t *table) selectedKey() string {
	if t.cursor >= 0 && t.cursor < len(t.keys) {
		return t.keys[t.cursor]
	}
	return ""
}

func (t *table) toggleMark() {
	k := t.selectedKey()
	if k == "" {
		return
	}
	if t.marked[k] {
		delete(t.marked, k)
	} else {
		t.marked[k] = true
	}
}

// visible lists the columns shown: all of them when they fit the width,
// else without the rightmost fixed ones (never the first), so that a
// narrow terminal loses whole columns rather than seeing ids cut.
func (t *table) visible() []int {
	vis := make([]int, len(t.cols))
	need := 0 // the marker (2) and the gaps (2 each): 2 per column
	for i, c := range t.cols {
		vis[i] = i
		need += c.width + 2
	}
	for i := len(t.cols) - 1; i > 0 && need > t.width; i-- {
		if t.cols[i].flex {
			continue
		}
		need -= t.cols[i].width + 2
		vis = slices.Delete(vis, i, i+1)
	}
	return vis
}

// widths computes the widths of the visible columns vis for the table's
// width. The width left over by the fixed columns goes first to the flex
// columns whose cells (of the rows held) are wider than their minimum, so
// that nothing is cut while there is room, then evenly to every flex
// column.
func (t *table) widths(vis []int) []int {
	ws := make([]int, len(t.cols))
	avail := t.width - 2 - 2*(len(vis)-1) // marker, gaps
	fixed := 0
	var flex []int
	for _, i := range vis {
		c := t.cols[i]
		ws[i] = c.width
		fixed += c.width
		if c.flex {
			flex = append(flex, i)
		}
	}
	extra := avail - fixed
	if extra <= 0 || len(flex) == 0 {
		return ws
	}
	// What each flex column lacks to show its widest cell.
	need := make([]int, len(t.cols))
	for _, i := range flex {
		w := ansi.StringWidth(t.cols[i].title)
		for _, r := range t.rows {
			if i < len(r) {
				w = max(w, ansi.StringWidth(r[i]))
			}
		}
		need[i] = max(w-ws[i], 0)
	}
	// Share extra among the columns that lack width, the narrowest need
	// first, so that one long cell does not starve the others.
	order := slices.Clone(flex)
	slices.SortStableFunc(order, func(a, b int) int { return need[a] - need[b] })
	for n, i := range order {
		give := min(need[i], extra/(len(order)-n))
		ws[i] += give
		extra -= give
	}
	for n, i := range flex {
		give := extra / (len(flex) - n)
		ws[i] += give
		extra -= give
	}
	return ws
}

func (t *table) line(cells []string, ws, vis []int) string {
	var b strings.Builder
	for n, i := range vis {
		if i >= len(cells) {
			break
		}
		if n > 0 {
			b.WriteString("  ")
		}
		if t.cols[i].right {
			b.WriteString(padLeft(cells[i], ws[i]))
		} else {
			b.WriteString(pad(cells[i], ws[i]))
		}
	}
	return b.String()
}

// view renders the header and the visible rows, padded to the height.
func (t *table) view() string {
	vis := t.visible()
	ws := t.widths(vis)
	titles := make([]string, len(t.cols))
	for i, c := range t.cols {
		titles[i] = c.title
		if i == t.sortCol {
			titles[i] += map[bool]string{false: " ↑", true: " ↓"}[t.sortDesc]
		}
	}
	lines := make([]string, 0, t.height)
	lines = append(lines, t.st.colHeader.Render(pad("  "+t.line(titles, ws, vis), t.width)))
	if len(t.rows) == 0 && t.empty != "" {
		lines = append(lines, t.st.muted.Render(pad("  "+t.empty, t.width)))
	}
	end := min(t.top+t.pageRows(), len(t.rows))
	for i := t.top; i < end; i++ {
		marker := "  "
		marked := i < len(t.keys) && t.marked[t.keys[i]]
		switch {
		case i == t.cursor && t.focused && marked:
			marker = "▸*"
		case i == t.cursor && t.focused:
			marker = "▸ "
		case marked:
			marker = " *"
		}
		text := pad(marker+t.line(t.rows[i], ws, vis), t.width)
		switch {
		case i == t.cursor && t.focused:
			text = t.st.selected.Render(text)
		case marked:
			text = t.st.marked.Render(text)
		case t.styleOf != nil:
			if s, ok := t.styleOf(i); ok {
				text = s.Render(text)
			}
		}
		lines = append(lines, text)
	}
	for len(lines) < t.height {
		lines = append(lines, "")
	}
	return strings.Join(lines, "\n")
}
