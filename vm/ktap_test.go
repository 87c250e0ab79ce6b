package vm

import (
	"reflect"
	"testing"
)

func TestParseKTAP(t *testing.T) {
	lines := []string{
		"[    1.000000] KTAP version 1",
		"[    1.000001] 1..3",
		"[    1.000002]     KTAP version 1",
		"[    1.000003]     # Subtest: kmes_ring",
		"[    1.000004]     # module: kmes_ring_kunit",
		"[    1.000005]     1..3",
		"[    1.000006]     ok 1 kmes_ring_first_sequence",
		"[    1.000007]     # kmes_ring_wrap: EXPECTATION FAILED at kernel/kmes/tests/ring_kunit.c:42",
		"[    1.000008]     Expected tail == 64, but",
		"[    1.000009]     not ok 2 kmes_ring_wrap",
		"[    1.000010]         KTAP version 1",
		"[    1.000011]         # Subtest: kmes_ring_param",
		"[    1.000012]         ok 1 small",
		"[    1.000013]     ok 3 kmes_ring_param",
		"[    1.000014] # kmes_ring: pass:2 fail:1 skip:0 total:3",
		"[    1.000015] not ok 1 kmes_ring",
		"kmes-guest: something from userspace",
		"[    1.000016]     KTAP version 1",
		"[    1.000017]     # Subtest: kmes_percpu",
		"[    1.000018]     ok 1 kmes_percpu_two_cpus # SKIP needs two CPUs",
		"[    1.000019] ok 2 kmes_percpu # SKIP needs two CPUs",
		"[    1.000020]     # Subtest: other_suite",
		"[    1.000021]     ok 1 other_case",
		"[    1.000022] ok 3 other_suite",
		"[    1.000023]     # Subtest: kmes_crash",
		"[    1.000024]     ok 1 kmes_crash_first",
		"[    1.000025] BUG: unable to handle page fault",
	}
	want := KTAPTest{Plan: 3, Subtests: []KTAPTest{
		{Number: 1, Name: "kmes_ring", Result: "not ok", Plan: 3, Subtests: []KTAPTest{
			{Number: 1, Name: "kmes_ring_first_sequence", Result: "ok", Plan: -1},
			{Number: 2, Name: "kmes_ring_wrap", Result: "not ok", Plan: -1, Diagnostics: []string{"# kmes_ring_wrap: EXPECTATION FAILED at kernel/kmes/tests/ring_kunit.c:42", "Expected tail == 64, but"}},
			{Number: 3, Name: "kmes_ring_param", Result: "ok", Plan: -1, Subtests: []KTAPTest{{Number: 1, Name: "small", Result: "ok", Plan: -1}}},
		}, Diagnostics: []string{
			"    # kmes_ring_wrap: EXPECTATION FAILED at kernel/kmes/tests/ring_kunit.c:42",
			"    Expected tail == 64, but",
			"# kmes_ring: pass:2 fail:1 skip:0 total:3",
		}},
		{Number: 2, Name: "kmes_percpu", Result: "skip", Plan: -1, Subtests: []KTAPTest{{Number: 1, Name: "kmes_percpu_two_cpus", Result: "skip", Plan: -1}}, Diagnostics: []string{"kmes-guest: something from userspace"}},
		{Number: 3, Name: "other_suite", Result: "ok", Plan: -1, Subtests: []KTAPTest{{Number: 1, Name: "other_case", Result: "ok", Plan: -1}}},
		{Name: "kmes_crash", Plan: -1, Subtests: []KTAPTest{{Number: 1, Name: "kmes_crash_first", Result: "ok", Plan: -1}}, Diagnostics: []string{"BUG: unable to handle page fault"}},
	}}
	if got := ParseKTAP(lines); !reflect.DeepEqual(got, want) {
		t.Errorf("ParseKTAP:\n got %+v\nwant %+v", got, want)
	}
}
