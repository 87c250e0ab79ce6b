package vm

import (
	"regexp"
	"strconv"
	"strings"
)

// KTAPTest is one test of a KTAP (or TAP 13) document: its result line, the
// subtests reported before it one indentation level (4 spaces) deeper, and
// what was printed since the previous result of its level. The document
// itself is the root: a test without a name or result whose subtests are the
// top-level results.
type KTAPTest struct {
	Number int
	Name   string
	// Result is "ok", "not ok", the directive in lower case for a result
	// with one ("skip", "xfail", "todo"), or "" for a test that started
	// ("# Subtest: name") but never reported.
	Result string
	// Plan is the number of subtests announced ("1..N"), -1 without a plan.
	Plan     int
	Subtests []KTAPTest
	// Diagnostics are the lines printed since the previous result of the
	// same level, at this level or deeper, less the KTAP structure: a
	// failed expectation and its explanation, a test's own output.
	Diagnostics []string
}

var (
	printkStamp = regexp.MustCompile(`^\[\s*\d+\.\d+\] ?`)
	ktapResult  = regexp.MustCompile(`^(not ok|ok) (\d+)\b ?([^#]*?)\s*(#\s*(\S*).*)?$`)
	ktapPlan    = regexp.MustCompile(`^\d+\.\.(\d+)\s*(#.*)?$`)
)

// ktapLine is an input line without printk stamp and indentation.
type ktapLine struct {
	indent int
	text   string
}

// ParseKTAP parses KTAP lines, such as the kernel console with the KUnit
// results or a kselftest program's output, and returns the document's root.
// Lines that are not KTAP (kernel messages, a test's output) become
// diagnostics.
func ParseKTAP(lines []string) KTAPTest {
	ls := make([]ktapLine, len(lines))
	for i, raw := range lines {
		l := printkStamp.ReplaceAllString(strings.TrimRight(raw, "\r"), "")
		text := strings.TrimLeft(l, " ")
		ls[i] = ktapLine{indent: len(l) - len(text), text: text}
	}
	root := KTAPTest{}
	root.Subtests, root.Plan = parseKTAPLevel(ls, 0)
	return root
}

// parseKTAPLevel returns the results at indentation indent and its plan.
func parseKTAPLevel(ls []ktapLine, indent int) ([]KTAPTest, int) {
	var tests []KTAPTest
	plan := -1
	start := 0
	for i, l := range ls {
		if l.indent != indent {
			continue
		}
		if m := ktapPlan.FindStringSubmatch(l.text); m != nil && plan < 0 {
			plan, _ = strconv.Atoi(m[1])
			continue
		}
		m := ktapResult.FindStringSubmatch(l.text)
		if m == nil {
			continue
		}
		t := newKTAPTest(ls[start:i], indent)
		t.Number, _ = strconv.Atoi(m[2])
		t.Name = m[3]
		t.Result = m[1]
		if d := strings.ToUpper(m[5]); d == "SKIP" || d == "XFAIL" || d == "TODO" {
			t.Result = strings.ToLower(d)
		}
		tests = append(tests, t)
		start = i + 1
	}
	// A test that started but never reported (a crash) still counts.
	for _, l := range ls[start:] {
		if name, ok := strings.CutPrefix(l.text, "# Subtest: "); ok && l.indent == indent+4 {
			t := newKTAPTest(ls[start:], indent)
			t.Name = strings.TrimSpace(name)
			tests = append(tests, t)
			break
		}
	}
	return tests, plan
}

// newKTAPTest makes the test whose lines before its result are ls.
func newKTAPTest(ls []ktapLine, indent int) KTAPTest {
	t := KTAPTest{}
	t.Subtests, t.Plan = parseKTAPLevel(ls, indent+4)
	for _, l := range ls {
		if l.indent >= indent && !isKTAPStructure(l.text) {
			t.Diagnostics = append(t.Diagnostics, strings.Repeat(" ", l.indent-indent)+l.text)
		}
	}
	return t
}

// isKTAPStructure tells KTAP's own lines from diagnostics and output.
func isKTAPStructure(l string) bool {
	return ktapPlan.MatchString(l) || ktapResult.MatchString(l) ||
		strings.HasPrefix(l, "KTAP version") || strings.HasPrefix(l, "TAP version") ||
		strings.HasPrefix(l, "# module:") || strings.HasPrefix(l, "# Subtest:")
}
