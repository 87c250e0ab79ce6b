//go:build linux

package kmestest_test

import (
	"fmt"
	"log"
	"time"

	"github.com/kmes-project/kmes/userspace/kmes"
	"github.com/kmes-project/kmes/userspace/kmes/abi"
	"github.com/kmes-project/kmes/userspace/kmestest"
)

// Testing a consumer without a kernel: simulated rings as the Reader's
// source, events written into them, one dropped.
func ExampleSource() {
	src, err := kmestest.NewSource(2, abi.CapacityMin) // two CPUs' rings of 64 KiB
	if err != nil {
		log.Fatal(err)
	}
	defer src.Close()
	src.Emit(0, kmes.OriginUser, "app.login", []byte{0x81, 0xa4, 'u', 's', 'e', 'r', 0xa3, 'a', 'd', 'a'})
	src.Producer(1).Drop()
	src.Emit(1, kmes.OriginUser, "app.logout", []byte{0xc0})

	rd, err := kmes.NewReader(&kmes.Options{Source: src})
	if err != nil {
		log.Fatal(err)
	}
	defer rd.Close()
	rd.SetDeadline(time.Now()) // read what is there, then stop
	for r, err := range rd.Records() {
		if err != nil {
			break
		}
		var v any
		r.Decode(&v)
		fmt.Println(r.CPU, r.Sequence, r.Type, v, "dropped before:", r.Dropped)
	}
	// Output:
	// 0 1 app.login map[user:ada] dropped before: 0
	// 1 2 app.logout <nil> dropped before: 1
}
