package vm

import (
	"reflect"
	"strings"
	"testing"
)

// failTest is what a kselftest_harness program prints with one failed, one
// skipped and one passed test.
const failTest = `TAP version 13
1..3
# Starting 3 tests from 1 test cases.
#  RUN           global.emit_works ...
# fail_test.c:9:emit_works:Expected 0 (0) == r (-1)
# fail_test.c:9:emit_works:kmes_emit: errno 38
# emit_works: Test terminated by assertion
#          FAIL  global.emit_works
not ok 1 global.emit_works
#  RUN           global.skipped ...
#      SKIP      no such feature
#            OK  global.skipped
ok 2 global.skipped # SKIP no such feature
#  RUN           global.ok_too ...
#            OK  global.ok_too
ok 3 global.ok_too
# FAILED: 2 / 3 tests passed.
# Totals: pass:1 fail:1 xfail:0 xpass:0 skip:1 error:0
`

const passTest = `TAP version 13
1..2
# Starting 2 tests from 1 test cases.
#  RUN           global.proc_is_mounted ...
#            OK  global.proc_is_mounted
ok 1 global.proc_is_mounted
#  RUN           global.header_has_kmes ...
#            OK  global.header_has_kmes
ok 2 global.header_has_kmes
# PASSED: 2 / 2 tests passed.
# Totals: pass:2 fail:0 xfail:0 xpass:0 skip:0 error:0
`

func TestParseKTAPKselftest(t *testing.T) {
	got := ParseKTAP(strings.Split(failTest, "\n"))
	want := KTAPTest{Plan: 3, Subtests: []KTAPTest{
		{Number: 1, Name: "global.emit_works", Result: "not ok", Plan: -1, Diagnostics: []string{
			"# Starting 3 tests from 1 test cases.",
			"#  RUN           global.emit_works ...",
			"# fail_test.c:9:emit_works:Expected 0 (0) == r (-1)",
			"# fail_test.c:9:emit_works:kmes_emit: errno 38",
			"# emit_works: Test terminated by assertion",
			"#          FAIL  global.emit_works",
		}},
		{Number: 2, Name: "global.skipped", Result: "skip", Plan: -1, Diagnostics: []string{
			"#  RUN           global.skipped ...",
			"#      SKIP      no such feature",
			"#            OK  global.skipped",
		}},
		{Number: 3, Name: "global.ok_too", Result: "ok", Plan: -1, Diagnostics: []string{
			"#  RUN           global.ok_too ...",
			"#            OK  global.ok_too",
		}},
	}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ParseKTAP:\n got %+v\nwant %+v", got, want)
	}
}

func TestJudgeSelftest(t *testing.T) {
	type verdict struct {
		failed   []string // tests that failed
		passed   []string
		problems []string // substrings of the program's problems, in order
	}
	for _, tc := range []struct {
		name string
		out  string
		exit int
		want verdict
	}{
		{"all pass", passTest, 0, verdict{passed: []string{"global.proc_is_mounted", "global.header_has_kmes"}}},
		{"fail and skip", failTest, 1, verdict{failed: []string{"global.emit_works", "global.skipped"}, passed: []string{"global.ok_too"}}},
		{"all pass but crashed at exit", passTest, 139, verdict{
			passed:   []string{"global.proc_is_mounted", "global.header_has_kmes"},
			problems: []string{"139 (killed by signal 11)"},
		}},
		{"killed half way", "TAP version 13\n1..3\nok 1 a\n#  RUN  global.b ...\nkmes-guest: /kmes/selftests/kmes/x timed out after 2m0s: killed\n", 137, verdict{
			passed:   []string{"a"},
			problems: []string{"planned 3 tests but reported 1", "137 (killed by signal 9)"},
		}},
		{"whole program skipped", "TAP version 13\n1..0 # SKIP needs CONFIG_KMES\n", 4, verdict{
			problems: []string{"ran no test", "4 (KSFT_SKIP"},
		}},
		{"skip after a plan, no name", "TAP version 13\n1..2\nok 1 a\nok 2 # SKIP no kmes\n", 4, verdict{
			passed: []string{"a"}, failed: []string{"2"},
		}},
		{"xfail and todo", "1..2\nok 1 a # XFAIL known bug\nnot ok 2 b # TODO later\n", 0, verdict{failed: []string{"a", "b"}}},
		{"no plan", "ok 1 a\n", 0, verdict{passed: []string{"a"}, problems: []string{"no KTAP plan"}}},
		{"no output", "", 0, verdict{problems: []string{"no KTAP plan"}}},
		{"garbage", "Segmentation fault\n", 139, verdict{problems: []string{"no KTAP plan", "signal 11"}}},
		{"not ok but exit 0", "1..1\nnot ok 1 a\n", 0, verdict{failed: []string{"a"}}},
		{"a name with spaces", "1..1\nok 1 mmap with MAP_SHARED\n", 0, verdict{passed: []string{"mmap with MAP_SHARED"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep := JudgeSelftest([]byte(tc.out), tc.exit)
			var got verdict
			for _, c := range rep.Tests {
				if c.Problem == "" {
					got.passed = append(got.passed, c.Name)
				} else {
					got.failed = append(got.failed, c.Name)
				}
			}
			if !reflect.DeepEqual(got.passed, tc.want.passed) || !reflect.DeepEqual(got.failed, tc.want.failed) {
				t.Errorf("passed %q failed %q, want passed %q failed %q", got.passed, got.failed, tc.want.passed, tc.want.failed)
			}
			if len(rep.Problems) != len(tc.want.problems) {
				t.Fatalf("problems %q, want ones with %q", rep.Problems, tc.want.problems)
			}
			for i, p := range rep.Problems {
				if !strings.Contains(p, tc.want.problems[i]) {
					t.Errorf("problem %q, want one with %q", p, tc.want.problems[i])
				}
			}
		})
	}
}

// A failed test's verdict shows its output.
func TestJudgeSelftestShowsOutput(t *testing.T) {
	rep := JudgeSelftest([]byte(failTest), 1)
	if p := rep.Tests[0].Problem; !strings.Contains(p, "kmes_emit: errno 38") || strings.Contains(p, "global.skipped") {
		t.Errorf("emit_works: %q, want its own output only", p)
	}
	if p := rep.Tests[1].Problem; !strings.Contains(p, "missing feature") || !strings.Contains(p, "no such feature") {
		t.Errorf("skipped: %q", p)
	}
}
