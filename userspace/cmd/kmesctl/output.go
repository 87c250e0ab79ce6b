package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/kmes-project/kmes/userspace/kmes"
)

// printer writes tail's output in one mode.
type printer interface {
	event(r *kmes.Record) error               // one event
	loss(cpu int, lost, dropped uint64) error // events lost/dropped on cpu just before the next event printed from it
	flush() error                             // write out what is buffered
}

// outputModes are the values of tail -o, for its usage and errors.
const outputModes = "json, json-pretty, short"

// newPrinter returns the printer of mode. Its output is buffered: it
// writes only when its buffer fills or flush is called, so a backlog
// costs few system calls.
func newPrinter(mode string, stdout, stderr io.Writer) (printer, error) {
	return newCommandPrinter("tail", mode, stdout, stderr)
}

// newCommandPrinter is newPrinter for command cmd (tail, query), which
// its messages name.
func newCommandPrinter(cmd, mode string, stdout, stderr io.Writer) (printer, error) {
	w := bufio.NewWriter(stdout)
	switch mode {
	case "json":
		return &jsonPrinter{w: w}, nil
	case "json-pretty":
		return &jsonPrinter{w: w, pretty: true}, nil
	case "short":
		return &shortPrinter{w: w, stderr: stderr, loc: time.Local, cmd: cmd}, nil
	}
	return nil, usagef("kmesctl %s: -o %s: unknown output mode (%s)", cmd, mode, outputModes)
}

// jsonPrinter writes each event as appendRecord's line, or that object
// indented by two spaces; a loss is an object of its own in the stream.
type jsonPrinter struct {
	w      *bufio.Writer
	pretty bool
	line   []byte
	indent bytes.Buffer
}

func (p *jsonPrinter) event(r *kmes.Record) error {
	p.line = appendRecord(p.line[:0], r)
	return p.write()
}

// loss has no "type", which every event has: the two cannot be confused.
func (p *jsonPrinter) loss(cpu int, lost, dropped uint64) error {
	p.line = append(p.line[:0], `{"cpu":`...)
	p.line = strconv.AppendInt(p.line, int64(cpu), 10)
	p.line = append(p.line, `,"lost":`...)
	p.line = strconv.AppendUint(p.line, lost, 10)
	p.line = append(p.line, `,"dropped":`...)
	p.line = strconv.AppendUint(p.line, dropped, 10)
	p.line = append(p.line, "}\n"...)
	return p.write()
}

func (p *jsonPrinter) write() error {
	if !p.pretty {
		_, err := p.w.Write(p.line)
		return err
	}
	p.indent.Reset()
	// The line is valid JSON (appendPayloadJSON's guarantee); Indent keeps
	// its keys in order and its trailing newline.
	if err := json.Indent(&p.indent, p.line, "", "  "); err != nil {
		return fmt.Errorf("indent %s: %w", bytes.TrimSpace(p.line), err)
	}
	_, err := p.w.Write(p.indent.Bytes())
	return err
}

func (p *jsonPrinter) flush() error { return p.w.Flush() }

// shortFormat is the short mode's timestamp: local time to the µs, the
// layout --since accepts, so a time can be pasted there.
const shortFormat = "2006-01-02 15:04:05.000000"

// shortPrinter writes one line per event for people:
//
//	2026-12-05 10:00:00.123456 cpu 1 seq 7 app.login {"user":"ada"}
//
// and reports losses on standard error.
type shortPrinter struct {
	w      *bufio.Writer
	stderr io.Writer
	loc    *time.Location
	line   []byte
	cmd    string // for the loss message: tail, query
}

func (p *shortPrinter) event(r *kmes.Record) error {
	b := time.Unix(0, r.Timestamp).In(p.loc).AppendFormat(p.line[:0], shortFormat)
	b = append(b, " cpu "...)
	b = strconv.AppendInt(b, int64(r.CPU), 10)
	b = append(b, " seq "...)
	b = strconv.AppendUint(b, r.Sequence, 10)
	b = append(b, ' ')
	b = appendShortType(b, r.Type)
	if len(r.Payload) > 0 {
		b = append(b, ' ')
		out, err := appendPayloadJSON(b, r.Payload)
		if err != nil {
			out = append(append(b, "<payload error: "...), err.Error()...)
			out = append(out, '>')
		}
		b = out
	}
	p.line = append(b, '\n')
	_, err := p.w.Write(p.line)
	return err
}

// appendShortType appends typ as it is when it is one word of printable
// characters, else quoted (strconv.Quote), so that a line splits into its
// fields the same way whatever the type.
func appendShortType(dst []byte, typ string) []byte {
	plain := typ != "" && typ[0] != '"' && utf8.ValidString(typ)
	for _, c := range typ {
		if !plain {
			break
		}
		plain = unicode.IsPrint(c) && c != ' '
	}
	if plain {
		return append(dst, typ...)
	}
	return strconv.AppendQuote(dst, typ)
}

// loss goes to standard error. It flushes the events before it first, so
// that on a terminal, where both streams meet, it shows where it
// happened: a loss is rare, so the extra write costs nothing.
func (p *shortPrinter) loss(cpu int, lost, dropped uint64) error {
	if err := p.w.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(p.stderr, "kmesctl %s: cpu %d: lost %d events (overwritten), dropped %d (before the ring)\n", p.cmd, cpu, lost, dropped)
	return err
}

func (p *shortPrinter) flush() error { return p.w.Flush() }
