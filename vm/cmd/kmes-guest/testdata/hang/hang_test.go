// Package hang is a guest suite whose test hangs, for kmes-guest's tests.
package hang

import (
	"testing"
	"time"
)

func TestHang(t *testing.T) {
	t.Log("hanging")
	time.Sleep(time.Hour)
}
