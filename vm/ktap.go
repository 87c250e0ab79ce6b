package vm

import (
	"regexp"
	"strings"
)

// KUnitSuite is one KUnit suite's result as printed in KTAP on the console.
type KUnitSuite struct {
	Name   string
	Result string // "ok", "not ok" or "skip"
	Cases  []KUnitCase
}

// KUnitCase is one test case of a suite.
type KUnitCase struct {
	Name   string
	Result string // "ok", "not ok" or "skip"
	// Diagnostics are the "# ..." lines KUnit printed for the case, such
	// as a failed expectation.
	Diagnostics []string
}

var (
	printkStamp = regexp.MustCompile(`^\[\s*\d+\.\d+\] ?`)
	ktapResult  = regexp.MustCompile(`^(not ok|ok) \d+ (\S+)(\s+#\s*SKIP.*)?$`)
	ktapPlan    = regexp.MustCompile(`^\d+\.\.\d+$`)
)

// ParseKTAP extracts the KUnit suites from console lines: suite results are
// the top-level KTAP lines, case results the ones indented once under
// "# Subtest: <suite>".
func ParseKTAP(lines []string) []KUnitSuite {
	var suites []KUnitSuite
	var cur *KUnitSuite
	var diags []string
	for _, raw := range lines {
		l := printkStamp.ReplaceAllString(strings.TrimRight(raw, "\r"), "")
		trimmed := strings.TrimLeft(l, " ")
		indent := len(l) - len(trimmed)
		if name, ok := strings.CutPrefix(trimmed, "# Subtest: "); ok && indent == 4 {
			suites = append(suites, KUnitSuite{Name: strings.TrimSpace(name)})
			cur = &suites[len(suites)-1]
			diags = nil
			continue
		}
		m := ktapResult.FindStringSubmatch(trimmed)
		switch {
		case m == nil:
			if cur != nil && indent == 4 && isKTAPDiagnostic(trimmed) {
				diags = append(diags, trimmed)
			}
		case indent == 0:
			// A suite's own result line closes it.
			for i := range suites {
				if suites[i].Name == m[2] && suites[i].Result == "" {
					suites[i].Result = ktapOutcome(m)
				}
			}
			cur = nil
		case indent == 4 && cur != nil:
			cur.Cases = append(cur.Cases, KUnitCase{Name: m[2], Result: ktapOutcome(m), Diagnostics: diags})
			diags = nil
		}
	}
	return suites
}

// isKTAPDiagnostic tells a case's diagnostic output (a failed expectation
// and its explanation) from KTAP structure.
func isKTAPDiagnostic(l string) bool {
	return !ktapPlan.MatchString(l) && !strings.HasPrefix(l, "KTAP version") &&
		!strings.HasPrefix(l, "# module:") && !strings.HasPrefix(l, "# Subtest:")
}

func ktapOutcome(m []string) string {
	if m[3] != "" {
		return "skip"
	}
	return m[1]
}
