package kmes

import (
	"fmt"
	"slices"
)

// KernelRings returns the RingSource of the running kernel: kmes_attach,
// then an mmap of each ring.
func KernelRings() RingSource { return kernelRings{} }

type kernelRings struct{}

func (kernelRings) Rings() ([]*Ring, error) { return Attach() }

func (kernelRings) Ring(i int) (*Ring, error) {
	fds, capacity, err := attach()
	if err != nil {
		return nil, err
	}
	defer closeFDs(fds)
	if i >= len(fds) {
		return nil, fmt.Errorf("attach ring %d: the kernel has %d rings", i, len(fds))
	}
	return mapRing(fds[i], capacity)
}

// Attach maps every CPU's ring, in CPU order, each positioned at its
// oldest surviving event. It needs CAP_AUDIT_READ. Close each ring when
// done; the file descriptors are closed already. A Ring does not follow a
// swap (its Generation then differs from its RingGeneration, also when
// the swap came before the mmap, and it reads as drained): a Reader does.
// While a replaced ring stays mapped, the kernel refuses the next change
// of kernel.kmes.buffer_capacity with EBUSY.
func Attach() ([]*Ring, error) {
	fds, capacity, err := attach()
	if err != nil {
		return nil, err
	}
	defer closeFDs(fds)
	rings := make([]*Ring, 0, len(fds))
	for _, fd := range fds {
		r, err := mapRing(fd, capacity)
		if err != nil {
			for _, r := range rings {
				r.Close()
			}
			return nil, err
		}
		rings = append(rings, r)
	}
	return rings, nil
}

// ringsOf maps only the rings of cpus. kmes_attach gives one file
// descriptor per possible CPU, in CPU order (KMES.md §3), so the ring of
// a CPU is found without mapping the others; each mapped ring's cpu_id
// confirms it.
func (kernelRings) ringsOf(cpus []int) ([]*Ring, []int, error) {
	possible, err := possibleCPUs()
	if err != nil {
		return nil, nil, fmt.Errorf("attach rings: %w", err)
	}
	for _, cpu := range cpus {
		if !slices.Contains(possible, cpu) {
			return nil, nil, fmt.Errorf("attach rings: no ring of cpu %d (the kernel has rings of cpus %v)", cpu, possible)
		}
	}
	fds, capacity, err := attach()
	if err != nil {
		return nil, nil, err
	}
	defer closeFDs(fds)
	if len(fds) != len(possible) {
		return nil, nil, fmt.Errorf("attach rings: kmes_attach gave %d rings for the %d possible cpus %v", len(fds), len(possible), possible)
	}
	var rings []*Ring
	var index []int
	for i, cpu := range possible {
		if !slices.Contains(cpus, cpu) {
			continue
		}
		r, err := mapRing(fds[i], capacity)
		if err == nil && r.CPU() != cpu {
			r.Close()
			err = fmt.Errorf("map ring %d: its cpu_id is %d, not the %d-th possible cpu %d", i, r.CPU(), i, cpu)
		}
		if err != nil {
			for _, r := range rings {
				r.Close()
			}
			return nil, nil, err
		}
		rings = append(rings, r)
		index = append(index, i)
	}
	return rings, index, nil
}
