package unhandled

import (
	"fmt"
	"testing"
)

func TestTally(t *testing.T) {
	var tl Tally
	if d := tl.Due(); len(d) != 0 {
		t.Fatalf("due %v on an empty tally", d)
	}
	tl.Add("A", 2)
	tl.Add("A", 3)
	tl.Add("B", 0)
	if c := tl.Counts(); len(c) != 1 || c["A"] != 5 {
		t.Fatalf("counts %v", c)
	}
	if d := tl.Due(); len(d) != 1 || d[0] != (Report{"A", 5, 5}) {
		t.Fatalf("due %v", d)
	}
	if d := tl.Due(); len(d) != 0 {
		t.Fatalf("due again %v", d)
	}
	tl.Add("A", 1)
	if d := tl.Due(); len(d) != 1 || d[0] != (Report{"A", 1, 6}) {
		t.Fatalf("due %v", d)
	}
}

func TestTallyBounded(t *testing.T) {
	var tl Tally
	for i := range MaxEvents + 5 {
		tl.Add(fmt.Sprint("E", i), 1)
	}
	c := tl.Counts()
	if len(c) != MaxEvents+1 || c[Overflow] != 5 {
		t.Fatalf("%d events, overflow %d", len(c), c[Overflow])
	}
}
