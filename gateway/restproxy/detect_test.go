package restproxy

import (
	"context"
	"testing"

	"github.com/spectacles-go/spectacles/gateway/simulator"
)

func TestDetectGlobalLimit(t *testing.T) {
	for mc, want := range map[int]int{1: 50, 16: 500, 32: 800} {
		s, err := simulator.New(simulator.Config{MaxConcurrency: mc, Shards: 32})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		got, err := DetectGlobalLimit(context.Background(), nil, s.URL()+"/api/v10", "Bot "+s.Token())
		if err != nil || got != want {
			t.Errorf("max_concurrency %d: %d %v, want %d", mc, got, err, want)
		}
		if _, err := DetectGlobalLimit(context.Background(), nil, s.URL()+"/api/v10", "Bot wrong"); err == nil {
			t.Error("a refused token detected a limit")
		}
		_ = s.Close()
	}
}
