package main

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
)

// A template is text with placeholders, split once into parts:
//
//	{seq}     the request's sequence number in this run (0, 1, 2, ...)
//	{seq:N}   the same, zero-padded to N digits (N from 1 to 20)
//	{uuid}    a random UUID (version 4)
//	{prefix}  the -prefix value
//
// Any other text, braces included (JSON bodies), is copied as it is.
type template struct {
	parts []part
	fixed bool // no placeholder: render returns the text itself
	text  string
}

type partKind int

const (
	literal partKind = iota
	seqPart
	uuidPart
)

type part struct {
	kind  partKind
	text  string // literal text
	width int    // zero-padding of {seq:N}
}

func parseTemplate(text, prefix string) (template, error) {
	t := template{text: text}
	var lit strings.Builder
	flush := func() {
		if lit.Len() > 0 {
			t.parts = append(t.parts, part{kind: literal, text: lit.String()})
			lit.Reset()
		}
	}
	for i := 0; i < len(text); {
		if text[i] != '{' {
			lit.WriteByte(text[i])
			i++
			continue
		}
		end := strings.IndexByte(text[i:], '}')
		if end < 0 {
			lit.WriteString(text[i:])
			break
		}
		name := text[i+1 : i+end]
		switch {
		case name == "seq":
			flush()
			t.parts = append(t.parts, part{kind: seqPart})
		case strings.HasPrefix(name, "seq:"):
			width, err := strconv.Atoi(name[4:])
			if err != nil || width < 1 || width > 20 {
				return t, fmt.Errorf("bad placeholder {%s}: the width must be 1 to 20", name)
			}
			flush()
			t.parts = append(t.parts, part{kind: seqPart, width: width})
		case name == "uuid":
			flush()
			t.parts = append(t.parts, part{kind: uuidPart})
		case name == "prefix":
			lit.WriteString(prefix)
		default: // not a placeholder: keep the brace, go on after it
			lit.WriteByte('{')
			i++
			continue
		}
		i += end + 1
	}
	flush()
	t.fixed = true
	var all strings.Builder
	for _, p := range t.parts {
		t.fixed = t.fixed && p.kind == literal
		all.WriteString(p.text)
	}
	if t.fixed {
		t.text = all.String()
	}
	return t, nil
}

func (t template) render(buf []byte, seq uint64, rng *rand.Rand) []byte {
	for _, p := range t.parts {
		switch p.kind {
		case literal:
			buf = append(buf, p.text...)
		case seqPart:
			digits := strconv.FormatUint(seq, 10)
			for n := len(digits); n < p.width; n++ {
				buf = append(buf, '0')
			}
			buf = append(buf, digits...)
		case uuidPart:
			buf = appendUUID(buf, rng)
		}
	}
	return buf
}

func (t template) string(seq uint64, rng *rand.Rand) string {
	if t.fixed {
		return t.text
	}
	return string(t.render(nil, seq, rng))
}

const hexDigits = "0123456789abcdef"

// appendUUID appends a random version 4 UUID (RFC 9562), lower-case.
func appendUUID(buf []byte, rng *rand.Rand) []byte {
	var b [16]byte
	hi, lo := rng.Uint64(), rng.Uint64()
	for i := 0; i < 8; i++ {
		b[i] = byte(hi >> (8 * i))
		b[8+i] = byte(lo >> (8 * i))
	}
	b[6] = b[6]&0x0f | 0x40 // version 4
	b[8] = b[8]&0x3f | 0x80 // variant 10
	for i, x := range b {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			buf = append(buf, '-')
		}
		buf = append(buf, hexDigits[x>>4], hexDigits[x&0x0f])
	}
	return buf
}
