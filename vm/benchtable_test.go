package vm

import (
	"testing"

	"github.com/kmes-project/kmes/vm/guest"
)

func TestBenchTable(t *testing.T) {
	got := BenchTable([]BenchColumn{
		{CPU: "max", Metrics: []guest.Metric{
			{Name: "getppid", Value: 200, Unit: "ns/call"},
			{Name: "emit_64B", Value: 500, Unit: "ns/event"},
			{Name: "drain_1KiB_rate", Value: 1234.5, Unit: "MB/s"},
		}},
		{CPU: "max,-erms,-fsrm", Metrics: []guest.Metric{
			{Name: "getppid", Value: 250, Unit: "ns/call"},
			{Name: "emit_64B", Value: 450, Unit: "ns/event"},
			{Name: "only_here", Value: 0.5, Unit: "ratio"},
		}},
	})
	want := `| measurement | unit | -cpu max | / getppid | -cpu max,-erms,-fsrm | / getppid |
|---|---|--:|--:|--:|--:|
| getppid | ns/call | 200.0 | | 250.0 | |
| emit_64B | ns/event | 500.0 | 2.500 | 450.0 | 1.800 |
| drain_1KiB_rate | MB/s | 1234 | | | |
| only_here | ratio | | | 0.500 | |
`
	if got != want {
		t.Errorf("BenchTable:\n%s\nwant:\n%s", got, want)
	}
}

func TestBenchTargetTable(t *testing.T) {
	cols := []BenchColumn{
		{CPU: "max", Metrics: []guest.Metric{{Name: "a", Value: 3}, {Name: "b", Value: 2}}},
		{CPU: "max,-erms,-fsrm", Metrics: []guest.Metric{{Name: "a", Value: 1}, {Name: "b", Value: 2}}},
		{CPU: "other", Metrics: []guest.Metric{{Name: "a", Value: 1}}},
	}
	got := BenchTargetTable(cols, []BenchTarget{{"a", "b", 1}})
	want := `| target | -cpu max | -cpu max,-erms,-fsrm | -cpu other |
|---|--:|--:|--:|
| a / b <= 1 | 1.500 missed | 0.500 met | n/a |
`
	if got != want {
		t.Errorf("BenchTargetTable:\n%s\nwant:\n%s", got, want)
	}
}
