// Package abi is the ABI of KMES as Go constants: the event header, the
// mapping of a ring (producer page, consumer page, data), the batch entry
// and the x86-64 system call numbers. They mirror
// include/uapi/linux/kmes.h, which the series in patches/ adds; the kmes
// package's abi_test.go checks every one of them against that header, so
// the two cannot drift. Programs that use package kmes do not need them;
// they are for those that read rings or build events themselves.
package abi

// Origin classes (event header byte 26).
const (
	OriginUser = 0 // kmes_emit, kmes_emit_batch
	OriginKMES = 1 // KMES itself
	OriginKACS = 2 // reserved
	OriginLCS  = 3 // reserved
)

// Event header: field offsets of the packed, little-endian header.
const (
	HdrEventSizeOff   = 0
	HdrHeaderSizeOff  = 4
	HdrTimestampOff   = 8
	HdrSequenceOff    = 16
	HdrCPUIDOff       = 24
	HdrOriginClassOff = 26
	HdrTypeLenOff     = 27
	HdrTypeOff        = 29
	// HdrBaseSize is the header size without the type string.
	HdrBaseSize = 29
)

// Ring capacity range (bytes of the data region, a power of two).
const (
	CapacityMin = 65536
	CapacityMax = 268435456
)

// Mapping of a ring from a kmes_attach file descriptor.
const (
	MetaPageSize    = 4096
	MapProducerOff  = 0
	MapConsumerOff  = 4096
	MapDataOff      = 8192
	RingMagic       = "KMESRING"
	RingMagicLen    = 8
	RingVersion     = 1
	MetaMagicOff    = 0
	MetaVersionOff  = 8
	MetaCPUIDOff    = 12
	MetaCapacityOff = 16
	MetaDataOffOff  = 24
	MetaGenOff      = 32
	MetaWritePosOff = 64
	MetaTailPosOff  = 72
	MetaFutexOff    = 128
	// MetaDroppedOff is the u64 count of events dropped on the ring's CPU
	// since boot (cache line 3, written by the producer only, carried
	// over from ring to ring by a swap).
	MetaDroppedOff = 192
	// MetaRingGenerationOff is the u64 generation of the ring itself
	// (line 0, after the generation word): written once before the ring
	// is visible, never changed. The generation word (MetaGenOff) starts
	// equal to it and becomes the next ring's generation when a swap
	// replaces the ring, so the ring is replaced exactly when the two
	// differ. It reads 0 in a producer page laid out before it existed
	// (it was padding).
	MetaRingGenerationOff = 40
	// MetaDataPageSizeOff is the u32 size in bytes of the pages the data
	// region is made of (line 0, written once before the ring is
	// visible): 2 MiB when the data is on 2 MiB pages, 4096 when the
	// kernel fell back to 4 KiB pages (a ring below 2 MiB, no free 2 MiB
	// page on the CPU's node, or kmes.hugepages=0; the kernel log says
	// which). It reads 0 in a producer page laid out before it existed
	// (it was padding): unknown.
	MetaDataPageSizeOff = 48
	// MetaNeedWakeOff is an offset in the mapping (the consumer page).
	MetaNeedWakeOff = 4096
)

// MapSize is the length to mmap for a ring of the given capacity.
func MapSize(capacity uint64) uint64 { return MapDataOff + 2*capacity }

// Batches and system calls.
const (
	EmitBatchMax = 256

	EmitEntrySize          = 32
	EmitEntryTypeOff       = 0
	EmitEntryTypeLenOff    = 8
	EmitEntryPayloadOff    = 16
	EmitEntryPayloadLenOff = 24

	SysEmit      = 1090
	SysAttach    = 1091
	SysEmitBatch = 1092
)
