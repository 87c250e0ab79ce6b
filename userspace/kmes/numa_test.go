//go:build linux && amd64

package kmes

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestParseCPUList(t *testing.T) {
	for in, want := range map[string][]int{
		"0": {0}, "0-3": {0, 1, 2, 3}, "0-1,4,6-7": {0, 1, 4, 6, 7}, "2,": {2},
	} {
		if got, err := parseCPUList(in); err != nil || !slices.Equal(got, want) {
			t.Errorf("parseCPUList(%q) = %v, %v, want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "a", "3-1", "1-x"} {
		if _, err := parseCPUList(in); err == nil {
			t.Errorf("parseCPUList(%q) accepted", in)
		}
	}
}

func TestNodeCPUs(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("cpu/online", "0-3\n")
	write("node/node1/cpulist", "2-3\n")
	write("cpu/cpu2/node1/cpulist", "")
	write("cpu/cpu0/topology/x", "") // cpu0 has no node link: no NUMA
	old := sysfsCPU
	sysfsCPU = dir
	defer func() { sysfsCPU = old }()
	if got, err := nodeCPUs(2); err != nil || !slices.Equal(got, []int{2, 3}) {
		t.Errorf("cpu 2: %v %v, want node 1's [2 3]", got, err)
	}
	if got, err := nodeCPUs(0); err != nil || !slices.Equal(got, []int{0, 1, 2, 3}) {
		t.Errorf("cpu 0: %v %v, want every online cpu", got, err)
	}
}
