package kmes

import (
	"github.com/kmes-project/kmes/userspace/internal/series"
	"github.com/kmes-project/kmes/userspace/kmes/abi"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unsafe"
)

// seriesHeader builds include/uapi/linux/kmes.h from the patch series
// alone and returns its path.
func seriesHeader(t *testing.T) string {
	t.Helper()
	return filepath.Join(series.Files(t, series.UAPIHeader, series.UAPIHeader), series.UAPIHeader)
}

// goValues maps every numeric #define of the header to its Go constant.
var goValues = map[string]int64{
	"KMES_ORIGIN_USER":                OriginUser,
	"KMES_ORIGIN_KMES":                OriginKMES,
	"KMES_ORIGIN_KACS":                OriginKACS,
	"KMES_ORIGIN_LCS":                 OriginLCS,
	"KMES_HDR_EVENT_SIZE_OFF":         abi.HdrEventSizeOff,
	"KMES_HDR_HEADER_SIZE_OFF":        abi.HdrHeaderSizeOff,
	"KMES_HDR_TIMESTAMP_OFF":          abi.HdrTimestampOff,
	"KMES_HDR_SEQUENCE_OFF":           abi.HdrSequenceOff,
	"KMES_HDR_CPU_ID_OFF":             abi.HdrCPUIDOff,
	"KMES_HDR_ORIGIN_CLASS_OFF":       abi.HdrOriginClassOff,
	"KMES_HDR_TYPE_LEN_OFF":           abi.HdrTypeLenOff,
	"KMES_HDR_TYPE_OFF":               abi.HdrTypeOff,
	"KMES_HDR_BASE_SIZE":              abi.HdrBaseSize,
	"KMES_CAPACITY_MIN":               abi.CapacityMin,
	"KMES_CAPACITY_MAX":               abi.CapacityMax,
	"KMES_META_PAGE_SIZE":             abi.MetaPageSize,
	"KMES_MAP_PRODUCER_OFF":           abi.MapProducerOff,
	"KMES_MAP_CONSUMER_OFF":           abi.MapConsumerOff,
	"KMES_MAP_DATA_OFF":               abi.MapDataOff,
	"KMES_META_MAGIC_OFF":             abi.MetaMagicOff,
	"KMES_META_VERSION_OFF":           abi.MetaVersionOff,
	"KMES_META_CPU_ID_OFF":            abi.MetaCPUIDOff,
	"KMES_META_CAPACITY_OFF":          abi.MetaCapacityOff,
	"KMES_META_DATA_OFFSET_OFF":       abi.MetaDataOffOff,
	"KMES_META_GENERATION_OFF":        abi.MetaGenOff,
	"KMES_META_RING_GENERATION_OFF":   abi.MetaRingGenerationOff,
	"KMES_META_DATA_PAGE_SIZE_OFF":    abi.MetaDataPageSizeOff,
	"KMES_META_WRITE_POS_OFF":         abi.MetaWritePosOff,
	"KMES_META_TAIL_POS_OFF":          abi.MetaTailPosOff,
	"KMES_META_FUTEX_COUNTER_OFF":     abi.MetaFutexOff,
	"KMES_META_DROPPED_OFF":           abi.MetaDroppedOff,
	"KMES_RING_MAGIC_LEN":             abi.RingMagicLen,
	"KMES_RING_VERSION":               abi.RingVersion,
	"KMES_META_NEED_WAKE_OFF":         abi.MetaNeedWakeOff,
	"KMES_EMIT_BATCH_MAX":             abi.EmitBatchMax,
	"KMES_EMIT_ENTRY_SIZE":            abi.EmitEntrySize,
	"KMES_EMIT_ENTRY_TYPE_OFF":        abi.EmitEntryTypeOff,
	"KMES_EMIT_ENTRY_TYPE_LEN_OFF":    abi.EmitEntryTypeLenOff,
	"KMES_EMIT_ENTRY_PAYLOAD_OFF":     abi.EmitEntryPayloadOff,
	"KMES_EMIT_ENTRY_PAYLOAD_LEN_OFF": abi.EmitEntryPayloadLenOff,
	"KMES_NR_EMIT_X86_64":             abi.SysEmit,
	"KMES_NR_ATTACH_X86_64":           abi.SysAttach,
	"KMES_NR_EMIT_BATCH_X86_64":       abi.SysEmitBatch,
}

var define = regexp.MustCompile(`(?m)^#define\s+(KMES_\w+)\s+(\S.*?)\s*(?:/\*.*)?$`)

func TestABIMatchesUAPIHeader(t *testing.T) {
	b, err := os.ReadFile(seriesHeader(t))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, m := range define.FindAllStringSubmatch(string(b), -1) {
		name, val := m[1], m[2]
		seen[name] = true
		switch name {
		case "KMES_RING_MAGIC":
			if val != strconv.Quote(abi.RingMagic) {
				t.Errorf("%s is %s, Go has %q", name, val, abi.RingMagic)
			}
			continue
		}
		n, err := strconv.ParseInt(val, 0, 64)
		if err != nil {
			t.Errorf("%s = %q: not a number; teach abi_test.go about it", name, val)
			continue
		}
		g, ok := goValues[name]
		if !ok {
			t.Errorf("%s = %d has no Go constant: add one to abi.go and goValues", name, n)
			continue
		}
		if g != n {
			t.Errorf("%s is %d in the header, %d in Go", name, n, g)
		}
	}
	for name := range goValues {
		if !seen[name] {
			t.Errorf("Go mirrors %s, which the header no longer defines", name)
		}
	}
	if !strings.Contains(string(b), "mmap(NULL, KMES_MAP_DATA_OFF + 2 * capacity,") {
		t.Error("the mapping length the header documents changed: update abi.MapSize")
	}
}

func TestEmitEntryLayout(t *testing.T) {
	var e emitEntry
	for _, c := range []struct {
		name      string
		got, want uintptr
	}{
		{"size", unsafe.Sizeof(e), abi.EmitEntrySize},
		{"type", unsafe.Offsetof(e.Type), abi.EmitEntryTypeOff},
		{"type_len", unsafe.Offsetof(e.TypeLen), abi.EmitEntryTypeLenOff},
		{"payload", unsafe.Offsetof(e.Payload), abi.EmitEntryPayloadOff},
		{"payload_len", unsafe.Offsetof(e.PayloadLen), abi.EmitEntryPayloadLenOff},
	} {
		if c.got != c.want {
			t.Errorf("emitEntry %s: %d, want %d", c.name, c.got, c.want)
		}
	}
}

// TestUAPIHeaderCompilesInC checks that the header is usable from C11
// userspace with the system's <linux/types.h>, static assertions included.
func TestUAPIHeaderCompilesInC(t *testing.T) {
	h := seriesHeader(t)
	cc, err := exec.LookPath("gcc")
	if err != nil {
		t.Fatal("gcc is needed: run 'make deps'")
	}
	src := "#include <linux/kmes.h>\nint main(void) { struct kmes_emit_entry e = {0}; return (int)sizeof(e) - KMES_EMIT_ENTRY_SIZE; }\n"
	for _, std := range []string{"-std=c11", "-std=gnu89"} {
		cmd := exec.Command(cc, std, "-Wall", "-Wextra", "-Werror", "-fsyntax-only", "-I", filepath.Dir(filepath.Dir(h)), "-x", "c", "-")
		cmd.Stdin = strings.NewReader(src)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("gcc %s: %v\n%s", std, err, out)
		}
	}
}
