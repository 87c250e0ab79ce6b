//go:build linux && amd64

package kmes_test

import (
	"errors"
	"fmt"
	"log"
	"os"
	"time"

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

// Reading in batches: one Reader over every CPU's ring, Views valid until
// the next read.
func ExampleReader_ReadEvents() {
	rd, err := kmes.NewReader(&kmes.Options{FromEnd: true}) // needs CAP_AUDIT_READ
	if err != nil {
		log.Fatal(err)
	}
	defer rd.Close() // from any goroutine: a waiting read returns os.ErrClosed
	views := make([]kmes.View, 256)
	for {
		n, err := rd.ReadEvents(views)
		if errors.Is(err, os.ErrClosed) {
			return
		}
		if err != nil {
			log.Print(err) // a *kmes.CorruptError: reading goes on
			continue
		}
		for _, v := range views[:n] {
			if v.Lost() > 0 {
				fmt.Printf("cpu %d: %d events lost before this one\n", v.CPU(), v.Lost())
			}
			fmt.Println(v.CPU(), v.Sequence(), string(v.Type()), len(v.Payload()))
		}
	}
}

// Iterating with a deadline: what the rings hold now, then the loop ends.
func ExampleReader_Records() {
	rd, err := kmes.NewReader(nil) // from the oldest surviving events
	if err != nil {
		log.Fatal(err)
	}
	defer rd.Close()
	rd.SetDeadline(time.Now()) // never wait
	for r, err := range rd.Records() {
		if err != nil {
			break // os.ErrDeadlineExceeded: all that was there was read
		}
		var v map[string]any
		if err := r.Decode(&v); err == nil {
			fmt.Println(r.Time(), r.Type, v)
		}
	}
}
