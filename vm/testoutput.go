package vm

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
)

// TestReport is one guest test binary's outcome.
type TestReport struct {
	Tests  []TestCase // top-level tests in the order they started
	Output string     // output outside any test (package failure, panic)
}

// TestCase is one top-level test; its subtests' output is in Output.
type TestCase struct {
	Name   string
	Action string // pass, fail, skip; "run" if it never finished
	Output string
}

// ParseTestOutput reads the output of a test binary run with
// -test.v=test2json, through 'go tool test2json'.
func ParseTestOutput(pkg string, out []byte) (TestReport, error) {
	cmd := exec.Command("go", "tool", "test2json", "-p", pkg)
	cmd.Stdin = bytes.NewReader(out)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	js, err := cmd.Output()
	if err != nil {
		return TestReport{}, fmt.Errorf("go tool test2json: %w: %s", err, stderr.String())
	}
	return parseTestEvents(js)
}

// parseTestEvents folds a test2json event stream into a TestReport.
func parseTestEvents(js []byte) (TestReport, error) {
	var rep TestReport
	var pkgOut strings.Builder
	index := map[string]int{}
	outputs := map[string]*strings.Builder{}
	dec := json.NewDecoder(bytes.NewReader(js))
	for dec.More() {
		var ev struct {
			Action string
			Test   string
			Output string
		}
		if err := dec.Decode(&ev); err != nil {
			return rep, fmt.Errorf("parse test2json output: %w", err)
		}
		if ev.Test == "" {
			if ev.Action == "output" {
				pkgOut.WriteString(ev.Output)
			}
			continue
		}
		top, _, _ := strings.Cut(ev.Test, "/")
		i, ok := index[top]
		if !ok {
			i = len(rep.Tests)
			index[top] = i
			rep.Tests = append(rep.Tests, TestCase{Name: top, Action: "run"})
			outputs[top] = &strings.Builder{}
		}
		switch ev.Action {
		case "output":
			outputs[top].WriteString(ev.Output)
		case "pass", "fail", "skip":
			if ev.Test == top {
				rep.Tests[i].Action = ev.Action
			}
		}
	}
	for i := range rep.Tests {
		rep.Tests[i].Output = outputs[rep.Tests[i].Name].String()
	}
	rep.Output = pkgOut.String()
	return rep, nil
}
