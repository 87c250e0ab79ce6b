package kmes

import "fmt"

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
