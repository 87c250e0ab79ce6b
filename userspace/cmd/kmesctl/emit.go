package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/kmes-project/kmes/userspace/kmes"
)

const emitUsage = `Usage: kmesctl emit [--raw] TYPE [JSON]

Emit one event of type TYPE (kmes_emit, which needs CAP_AUDIT_WRITE).
The payload is the JSON argument, or standard input when it is absent,
converted to msgpack: integers become msgpack integers, other numbers
floats, objects maps (in their order), arrays arrays. With --raw,
standard input is a msgpack payload and is sent as it is.
`

func runEmit(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("emit")
	raw := fs.Bool("raw", false, "read a msgpack payload from standard input and send it as it is")
	args, help, err := parseFlags(fs, args, emitUsage, stdout)
	if help || err != nil {
		return err
	}
	switch {
	case len(args) == 0:
		return usagef("kmesctl emit: no event type: run 'kmesctl emit --help'")
	case len(args) > 2:
		return usagef("kmesctl emit: too many arguments: run 'kmesctl emit --help'")
	case *raw && len(args) == 2:
		return usagef("kmesctl emit: --raw reads the payload from standard input, not from an argument")
	}
	typ := args[0]
	var payload []byte
	if *raw {
		b, err := io.ReadAll(stdin)
		if err != nil {
			return fmt.Errorf("kmesctl emit: read payload: %w", err)
		}
		payload = b
	} else {
		var in io.Reader = stdin
		if len(args) == 2 {
			in = strings.NewReader(args[1])
		}
		b, err := jsonToMsgpack(in)
		if err != nil {
			return usagef("kmesctl emit: payload is not JSON: %v", err)
		}
		payload = b
	}
	if err := kmes.Emit(typ, payload); err != nil {
		return fmt.Errorf("kmesctl emit: %w", err)
	}
	return nil
}
