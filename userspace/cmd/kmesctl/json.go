package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/vmihailenco/msgpack/v5"
)

// jsonObject is a JSON object with its keys in their order, which a Go
// map would lose.
type jsonObject struct {
	keys []string
	vals []any
}

// jsonDepthMax bounds the recursion of readJSON; the kernel takes at most
// 256 levels anyway.
const jsonDepthMax = 10000

// jsonToMsgpack converts the one JSON value in r to msgpack.
func jsonToMsgpack(r io.Reader) ([]byte, error) {
	dec := json.NewDecoder(r)
	dec.UseNumber()
	v, err := readJSON(dec, 0)
	if errors.Is(err, io.EOF) {
		return nil, errors.New("no JSON value")
	}
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, err
		}
		return nil, errors.New("more than one JSON value")
	}
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	if err := encodeJSON(enc, v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// readJSON reads one value: nil, bool, string, json.Number, []any or
// *jsonObject.
func readJSON(dec *json.Decoder, depth int) (any, error) {
	if depth > jsonDepthMax {
		return nil, fmt.Errorf("nesting deeper than %d", jsonDepthMax)
	}
	tok, err := token(dec, depth)
	if err != nil {
		return nil, err
	}
	d, ok := tok.(json.Delim)
	if !ok {
		return tok, nil
	}
	switch d {
	case '[':
		a := []any{}
		for dec.More() {
			v, err := readJSON(dec, depth+1)
			if err != nil {
				return nil, err
			}
			a = append(a, v)
		}
		_, err := token(dec, 1) // ]
		return a, err
	case '{':
		o := &jsonObject{}
		for dec.More() {
			k, err := token(dec, 1)
			if err != nil {
				return nil, err
			}
			v, err := readJSON(dec, depth+1)
			if err != nil {
				return nil, err
			}
			o.keys = append(o.keys, k.(string))
			o.vals = append(o.vals, v)
		}
		_, err := token(dec, 1) // }
		return o, err
	}
	return nil, fmt.Errorf("unexpected %v", d)
}

var errJSONEnd = errors.New("unexpected end of JSON input")

// token is dec.Token, where the end of the input inside a value (depth >
// 0) is an error of its own.
func token(dec *json.Decoder, depth int) (json.Token, error) {
	tok, err := dec.Token()
	if depth > 0 && errors.Is(err, io.EOF) {
		err = errJSONEnd
	}
	return tok, err
}

func encodeJSON(enc *msgpack.Encoder, v any) error {
	switch v := v.(type) {
	case nil:
		return enc.EncodeNil()
	case bool:
		return enc.EncodeBool(v)
	case string:
		return enc.EncodeString(v)
	case json.Number:
		return encodeNumber(enc, v)
	case []any:
		if err := enc.EncodeArrayLen(len(v)); err != nil {
			return err
		}
		for _, e := range v {
			if err := encodeJSON(enc, e); err != nil {
				return err
			}
		}
		return nil
	case *jsonObject:
		if err := enc.EncodeMapLen(len(v.keys)); err != nil {
			return err
		}
		for i, k := range v.keys {
			if err := enc.EncodeString(k); err != nil {
				return err
			}
			if err := encodeJSON(enc, v.vals[i]); err != nil {
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("unexpected JSON value %T", v)
}

// encodeNumber encodes an integer literal as the smallest msgpack integer
// and anything else (a fraction, an exponent, an integer beyond 64 bits)
// as a float64.
func encodeNumber(enc *msgpack.Encoder, n json.Number) error {
	s := n.String()
	if !strings.ContainsAny(s, ".eE") {
		if i, err := strconv.ParseInt(s, 10, 64); err == nil {
			return enc.EncodeInt(i)
		}
		if u, err := strconv.ParseUint(s, 10, 64); err == nil {
			return enc.EncodeUint(u)
		}
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return fmt.Errorf("number %s is out of range", s)
	}
	return enc.EncodeFloat64(f)
}
