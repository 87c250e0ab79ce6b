package kmes

import (
	"strings"
	"testing"
)

func TestSameString(t *testing.T) {
	for n := 0; n <= 40; n++ {
		s := strings.Repeat("abcdefghij", 5)[:n]
		if !sameString([]byte(s), s) {
			t.Errorf("%q differs from itself", s)
		}
		for i := range n {
			b := []byte(s)
			b[i] ^= 0x20
			if sameString(b, s) {
				t.Errorf("%q equals %q", b, s)
			}
		}
		if sameString([]byte(s+"x"), s) || sameString([]byte(s), s+"x") {
			t.Errorf("length %d: a longer string is equal", n)
		}
	}
}
