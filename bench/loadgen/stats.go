package main

import (
	"context"
	"errors"
	"io"
	"math"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"syscall"
	"time"
)

// stats of one phase (warm-up or measured) of one worker; merged at the end.
type stats struct {
	scheduled  int // requests due in this phase (sent, or given up as unsent)
	sent       int
	statuses   map[int]int
	errors     int
	errorKinds map[string]int
	timeouts   int
	late       int
	unsent     int
	latencies  []time.Duration // answered requests only
	sendDelays []time.Duration // open loop: actual send time - intended send time
}

func newStats() *stats {
	return &stats{statuses: map[int]int{}, errorKinds: map[string]int{}}
}

func (s *stats) merge(o *stats) {
	s.scheduled += o.scheduled
	s.sent += o.sent
	for k, v := range o.statuses {
		s.statuses[k] += v
	}
	s.errors += o.errors
	for k, v := range o.errorKinds {
		s.errorKinds[k] += v
	}
	s.timeouts += o.timeouts
	s.late += o.late
	s.unsent += o.unsent
	s.latencies = append(s.latencies, o.latencies...)
	s.sendDelays = append(s.sendDelays, o.sendDelays...)
}

const maxErrorKinds = 20

func (s *stats) addError(err error) {
	if isTimeout(err) {
		s.timeouts++
		return
	}
	s.errors++
	kind := errorKind(err)
	if _, known := s.errorKinds[kind]; !known && len(s.errorKinds) >= maxErrorKinds {
		kind = "other"
	}
	s.errorKinds[kind]++
}

func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// errorKind names a transport error without its addresses, so that equal
// failures count together: "dial: connection refused", "read: EOF".
func errorKind(err error) string {
	var op *net.OpError
	if errors.As(err, &op) {
		var errno syscall.Errno
		if errors.As(op.Err, &errno) {
			return op.Op + ": " + errno.Error()
		}
		return op.Op + ": " + truncate(op.Err.Error())
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return "connection closed by the server (EOF)"
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return truncate(ue.Err.Error())
	}
	return truncate(err.Error())
}

func truncate(s string) string {
	if len(s) > 120 {
		return s[:120]
	}
	return s
}

// percentiles in milliseconds, nearest rank; zeros when there is no sample.
type percentiles struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p99_9"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

func summarize(samples []time.Duration) percentiles {
	if len(samples) == 0 {
		return percentiles{}
	}
	slices.Sort(samples)
	at := func(q float64) float64 {
		rank := int(math.Ceil(q*float64(len(samples)))) - 1
		rank = max(0, min(len(samples)-1, rank))
		return ms(samples[rank])
	}
	var sum time.Duration
	for _, d := range samples {
		sum += d
	}
	return percentiles{
		P50:  at(0.50),
		P90:  at(0.90),
		P99:  at(0.99),
		P999: at(0.999),
		Max:  ms(samples[len(samples)-1]),
		Mean: ms(sum / time.Duration(len(samples))),
	}
}

func ms(d time.Duration) float64 {
	return math.Round(float64(d)/1e3) / 1e3 // milliseconds, to the microsecond
}

func statusKeys(m map[int]int) map[string]int {
	out := make(map[string]int, len(m))
	for k, v := range m {
		out[strconv.Itoa(k)] = v
	}
	return out
}
