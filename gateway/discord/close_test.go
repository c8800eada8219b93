package discord

import (
	"fmt"
	"testing"
)

func TestClassifyClose(t *testing.T) {
	for code, want := range map[int]CloseAction{
		4000: Resume, 4001: Resume, 4002: Resume, 4003: Resume, 4005: Resume, 4008: Resume,
		4007: Reidentify, 4009: Reidentify, 1000: Reidentify, 1001: Reidentify,
		4004: Fatal, 4010: Fatal, 4011: Fatal, 4012: Fatal, 4013: Fatal, 4014: Fatal,
		1006: Resume, 4999: Resume,
	} {
		if got, text := ClassifyClose(code); got != want || text == "" {
			t.Errorf("close %d: %v %q, want %v", code, got, text, want)
		}
	}
}

// TestCloseCodesHaveMeanings: every named Discord close code has its own
// meaning, not the fallback text for unknown codes.
func TestCloseCodesHaveMeanings(t *testing.T) {
	for _, code := range []int{CloseUnknownError, CloseUnknownOpcode, CloseDecodeError, CloseNotAuthenticated,
		CloseAuthenticationFailed, CloseAlreadyAuthenticated, CloseInvalidSeq, CloseRateLimited,
		CloseSessionTimedOut, CloseInvalidShard, CloseShardingRequired, CloseInvalidAPIVersion,
		CloseInvalidIntents, CloseDisallowedIntents, CloseNormal} {
		if _, text := ClassifyClose(code); text == "" || text == fmt.Sprintf("close code %d", code) {
			t.Errorf("close %d has no meaning: %q", code, text)
		}
	}
	if a, _ := ClassifyClose(CloseResumable); a != Resume {
		t.Errorf("CloseResumable classifies as %v", a)
	}
}
