package gateway

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

type fixedCounts map[string]uint64

func (f fixedCounts) UnhandledCounts() map[string]uint64 { return f }

func TestUnhandledCollector(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(UnhandledCollector(fixedCounts{"TYPING_START": 7, "GUILD_CREATE": 1}))
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		if f.GetName() != "gateway_broker_unhandled_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			if len(m.GetLabel()) != 1 || m.GetLabel()[0].GetName() != "event" {
				t.Fatalf("labels %v", m.GetLabel())
			}
			got[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
		}
	}
	if len(got) != 2 || got["TYPING_START"] != 7 || got["GUILD_CREATE"] != 1 {
		t.Fatalf("gateway_broker_unhandled_total %v", got)
	}
}
