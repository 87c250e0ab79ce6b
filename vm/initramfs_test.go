package vm

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// The kselftests go to /kmes/selftests/<collection>/, and a change to one
// of them changes the image's input key.
func TestInitramfsSelftests(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "kmes")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	in := Initramfs{ModuleDir: t.TempDir(), Selftests: []string{dir}}
	if _, err := in.inputKey(); err == nil {
		t.Error("a collection without kselftest-list.txt: want an error")
	}
	write := func(name, content string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write("kselftest-list.txt", "emit_test\n")
	write("emit_test", "v1")
	write(".key", "stamp")
	files, err := selftestFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		filepath.Join(dir, "emit_test") + ":kmes/selftests/kmes/emit_test",
		filepath.Join(dir, "kselftest-list.txt") + ":kmes/selftests/kmes/kselftest-list.txt",
	}
	if !reflect.DeepEqual(files, want) {
		t.Errorf("selftestFiles = %q, want %q", files, want)
	}
	k1, err := in.inputKey()
	if err != nil {
		t.Fatal(err)
	}
	write("emit_test", "v2")
	if k2, _ := in.inputKey(); k2 == k1 {
		t.Error("the input key did not change with a kselftest program")
	}
}
