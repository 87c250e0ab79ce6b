// Package suite is a guest test package, for the tests of guest.Main: its
// tests fail anywhere, so that one that runs shows.
package suite

import (
	"testing"

	"github.com/kmes-project/kmes/vm/guest"
)

func TestMain(m *testing.M) { guest.Main(m) }

func TestOne(t *testing.T) { t.Fatal("ran") }

func TestTwo(t *testing.T) { t.Fatal("ran") }
