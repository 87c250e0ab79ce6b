//go:build !linux

package main

import "time"

// threadCPU is 0 where there is no KMES to drain: kmesd builds on every
// platform (the library's users do), but runs on Linux only.
func threadCPU() time.Duration { return 0 }
