package guest

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// goTestSuite runs 'go test' on testdata/suite, a guest test package whose
// tests fail when they run.
func goTestSuite(t *testing.T, env []string, args ...string) (string, error) {
	t.Helper()
	if testing.Short() {
		t.Skip("runs go test")
	}
	// Not -count=1: the go command's test caching (its test log) must work.
	cmd := exec.Command("go", append([]string{"test"}, append(args, "./testdata/suite")...)...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// On the host a guest test package reports every test skipped, visibly in
// go test -v, and says where they run; it passes.
func TestMainOnTheHostSkipsEveryTest(t *testing.T) {
	out, err := goTestSuite(t, []string{ConfigEnv + "="}, "-v")
	if err != nil {
		t.Fatalf("go test -v of a guest package on the host: %v\n%s", err, out)
	}
	for _, want := range []string{"--- SKIP: TestOne", "--- SKIP: TestTwo", "make vmtest", "ok "} {
		if !strings.Contains(out, want) {
			t.Errorf("go test -v on the host lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "ran") {
		t.Errorf("a guest test ran on the host:\n%s", out)
	}
	// -run still selects.
	out, err = goTestSuite(t, []string{ConfigEnv + "="}, "-v", "-run", "TestTwo")
	if err != nil || strings.Contains(out, "TestOne") || !strings.Contains(out, "--- SKIP: TestTwo") {
		t.Errorf("go test -v -run TestTwo on the host: %v\n%s", err, out)
	}
}

// In the guest (the runner sets ConfigEnv) the tests run.
func TestMainInTheGuestRunsTheTests(t *testing.T) {
	out, err := goTestSuite(t, []string{ConfigEnv + "=/nonexistent/run.json"}, "-v")
	if err == nil || !strings.Contains(out, "--- FAIL: TestOne") || !strings.Contains(out, "--- FAIL: TestTwo") {
		t.Errorf("go test -v with %s set: %v\n%s", ConfigEnv, err, out)
	}
}
