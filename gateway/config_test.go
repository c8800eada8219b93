package gateway

import (
	"errors"
	"reflect"
	"testing"
)

func TestParseShardIDs(t *testing.T) {
	got, err := ParseShardIDs("0-3, 12,2,7-7")
	if err != nil {
		t.Fatal(err)
	}
	if want := []int{0, 1, 2, 3, 7, 12}; !reflect.DeepEqual(got, want) {
		t.Errorf("got %v want %v", got, want)
	}
	for _, bad := range []string{"a", "3-1", "-1", "1,,2", "0-99999999"} {
		if _, err := ParseShardIDs(bad); !errors.Is(err, ErrInvalidShardIDs) {
			t.Errorf("%q: err = %v", bad, err)
		}
	}
	if ids, err := ParseShardIDs(""); err != nil || ids != nil {
		t.Errorf("empty: %v %v", ids, err)
	}
	if all, err := ResolveShardIDs(nil, 3); err != nil || !reflect.DeepEqual(all, []int{0, 1, 2}) {
		t.Errorf("all: %v %v", all, err)
	}
	if _, err := ResolveShardIDs([]int{0, 12}, 12); !errors.Is(err, ErrInvalidShardIDs) {
		t.Errorf("out of range: %v", err)
	}
}
