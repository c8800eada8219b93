package tui

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/charmbracelet/x/ansi"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/internal/termtext"
)

// maxPreview caps how much of a payload the console decodes and shows.
const maxPreview = 64 << 10

// truncate cuts plain or styled text to width cells, ending with "…".
func truncate(s string, width int) string {
	if width <= 0 {
		return ""
	}
	if ansi.StringWidth(s) <= width {
		return s
	}
	return ansi.Truncate(s, width, "…")
}

// pad cuts or pads s to exactly width cells.
func pad(s string, width int) string {
	s = truncate(s, width)
	if w := ansi.StringWidth(s); w < width {
		s += strings.Repeat(" ", width-w)
	}
	return s
}

// padLeft right-aligns s in width cells.
func padLeft(s string, width int) string {
	s = truncate(s, width)
	if w := ansi.StringWidth(s); w < width {
		s = strings.Repeat(" ", width-w) + s
	}
	return s
}

// fmtDuration shows a duration in at most two units.
func fmtDuration(d time.Duration) string {
	switch {
	case d < 0:
		return "-"
	case d < time.Millisecond:
		return fmt.Sprintf("%dµs", d.Microseconds())
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	case d < time.Minute:
		return fmt.Sprintf("%.1fs", d.Seconds())
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%02dh", int(d.Hours())/24, int(d.Hours())%24)
}

// fmtLatency shows a round trip with sub-millisecond precision.
// fmtAge shows how old data is: whole seconds under a minute ("2s"), then
// as fmtDuration.
func fmtAge(d time.Duration) string {
	if d < time.Minute {
		return fmt.Sprintf("%ds", int(d/time.Second))
	}
	return fmtDuration(d)
}

func fmtLatency(d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	if d < time.Millisecond {
		return fmt.Sprintf("%dµs", d.Microseconds())
	}
	if d < 10*time.Millisecond {
		return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
	}
	return fmtDuration(d)
}

// fmtCount groups digits by three.
func fmtCount(n int64) string {
	if n < 0 {
		return "-"
	}
	s := strconv.FormatInt(n, 10)
	if len(s) <= 3 {
		return s
	}
	var b strings.Builder
	lead := len(s) % 3
	if lead > 0 {
		b.WriteString(s[:lead])
	}
	for i := lead; i < len(s); i += 3 {
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(s[i : i+3])
	}
	return b.String()
}

// fmtRate shows a per-second rate; NaN (unknown) shows as "-".
func fmtRate(r float64) string {
	switch {
	case math.IsNaN(r) || r < 0:
		return "-"
	case r == 0:
		return "0/s"
	case r < 10:
		return fmt.Sprintf("%.1f/s", r)
	}
	return fmt.Sprintf("%.0f/s", r)
}

// parseID splits a stream id "ms-seq".
func parseID(id string) (ms, seq uint64, ok bool) {
	a, b, found := strings.Cut(id, "-")
	ms, err1 := strconv.ParseUint(a, 10, 64)
	if !found {
		return ms, 0, err1 == nil
	}
	seq, err2 := strconv.ParseUint(b, 10, 64)
	return ms, seq, err1 == nil && err2 == nil
}

// idTime returns the time an id was created, or zero: a Redis stream id
// ("ms-seq") or a UUIDv7 (the AMQP driver's message ids), whose first 48
// bits are milliseconds since the epoch.
func idTime(id string) time.Time {
	if ms, ok := uuidV7Millis(id); ok {
		return time.UnixMilli(ms)
	}
	ms, _, ok := parseID(id)
	if !ok || ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(int64(ms))
}

// uuidV7Millis returns the timestamp of a UUIDv7 in its text form.
func uuidV7Millis(id string) (int64, bool) {
	if len(id) != 36 || id[8] != '-' || id[13] != '-' || id[18] != '-' || id[23] != '-' || id[14] != '7' {
		return 0, false
	}
	ms, err := strconv.ParseInt(id[:8]+id[9:13], 16, 64)
	if err != nil || ms <= 0 {
		return 0, false
	}
	return ms, true
}

// isStreamID reports whether id is a Redis stream id ("ms-seq"), which
// prevID and compareIDs can order.
func isStreamID(id string) bool {
	_, _, ok := parseID(id)
	return ok
}

// prevID returns the id just before id, so that an exclusive range after it
// starts at id; "" when there is none.
func prevID(id string) string {
	ms, seq, ok := parseID(id)
	if !ok {
		return ""
	}
	switch {
	case seq > 0:
		return fmt.Sprintf("%d-%d", ms, seq-1)
	case ms > 0:
		return fmt.Sprintf("%d-%d", ms-1, uint64(math.MaxUint64))
	}
	return ""
}

// compareIDs orders stream ids numerically, and other ids (AMQP message
// ids: UUIDv7, in time order as text) as text.
func compareIDs(a, b string) int {
	am, as, aok := parseID(a)
	bm, bs, bok := parseID(b)
	if !aok || !bok {
		return strings.Compare(a, b)
	}
	switch {
	case am < bm:
		return -1
	case am > bm:
		return 1
	case as < bs:
		return -1
	case as > bs:
		return 1
	}
	return 0
}

var sparkBlocks = []rune("▁▂▃▄▅▆▇█")

// sparkline draws values (newest last) in width cells, scaled to their
// maximum.
func sparkline(values []float64, width int) string {
	if width <= 0 {
		return ""
	}
	if len(values) > width {
		values = values[len(values)-width:]
	}
	top := 0.0
	for _, v := range values {
		top = max(top, v)
	}
	var b strings.Builder
	for range width - len(values) {
		b.WriteByte(' ')
	}
	for _, v := range values {
		i := 0
		if top > 0 {
			i = int(v / top * float64(len(sparkBlocks)-1))
		}
		b.WriteRune(sparkBlocks[max(0, min(i, len(sparkBlocks)-1))])
	}
	return b.String()
}

// decoded is a payload made fit to show.
type decoded struct {
	// Pretty is indented JSON, or a hex dump when the payload did not
	// decode.
	Pretty string
	// Line is compact JSON (or a note and a quoted prefix) on one line.
	Line string
	// OK reports a payload that decoded.
	OK bool
	// Err says why it did not decode.
	Err string
	// Truncated reports a payload larger than the preview cap.
	Truncated bool
	// Size is the payload's size in bytes.
	Size int
}

// decodePayload decodes raw as every Spectacles peer writes it (msgpack,
// JSON inside msgpack strings, or JSON) into pretty JSON.
func decodePayload(raw []byte) decoded {
	d := decoded{Size: len(raw)}
	if len(raw) > maxPreview {
		d.Truncated = true
	}
	var v any
	if len(raw) <= maxPreview {
		if err := (core.Msgpack{}).Unmarshal(raw, &v); err != nil {
			d.Err = err.Error()
		} else {
			d.OK = true
		}
	} else {
		d.Err = fmt.Sprintf("payload of %d bytes is over the %d KiB preview cap", len(raw), maxPreview>>10)
	}
	if d.OK {
		v = core.JSONValue(v)
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(v); err == nil {
			// termtext.JSON: no C1, bidi or format character is shown raw.
			d.Line = strings.TrimSpace(string(termtext.JSON(buf.Bytes())))
			var ind bytes.Buffer
			if json.Indent(&ind, []byte(d.Line), "", "  ") == nil {
				d.Pretty = ind.String()
			} else {
				d.Pretty = d.Line
			}
			return d
		}
		d.OK = false
		d.Err = "not representable as JSON"
	}
	d.Err = termtext.Escape(d.Err)
	shown := raw[:min(len(raw), maxPreview)]
	d.Pretty = hex.Dump(shown)
	if utf8.Valid(shown) {
		d.Line = "(raw) " + strconv.Quote(string(shown[:min(len(shown), 200)]))
	} else {
		d.Line = "(raw) " + hex.EncodeToString(shown[:min(len(shown), 64)])
	}
	return d
}

// oneLine replaces line breaks and tabs so that text fits one row.
func oneLine(s string) string {
	return strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ", "\t", " ").Replace(s)
}
