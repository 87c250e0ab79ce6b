//go:build linux && amd64

package kmes_test

import (
	"errors"
	"fmt"
	"log"

	"golang.org/x/sys/unix"

	"github.com/kmes-project/kmes/userspace/kmes"
)

// Emitting: the event is checked as the kernel will check it before the
// system call, and errors say which call failed, why and what to do.
func ExampleEmitValue() {
	err := kmes.EmitValue("app.login", map[string]any{"user": "ada", "ok": true})
	if errors.Is(err, unix.EPERM) {
		log.Fatal(err) // kmes_emit: operation not permitted (needs CAP_AUDIT_WRITE)
	}
}

// Reading every CPU's ring, merged in timestamp order.
func ExampleConsumer_ReadMerged() {
	c, err := kmes.NewConsumer(&kmes.Options{FromEnd: true}) // needs CAP_AUDIT_READ
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close() // from any goroutine: ReadMerged then returns nil
	err = c.ReadMerged(func(r *kmes.Record) error {
		fmt.Println(r.CPU, r.Sequence, r.Time(), r.Type, len(r.Payload))
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	for _, s := range c.Stats() {
		fmt.Printf("cpu %d: %d read, %d lost, %d dropped\n", s.CPU, s.Events, s.Lost, s.Dropped)
	}
}
