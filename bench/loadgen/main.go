// lookback-loadgen: an HTTP load generator that counts what matters.
//
// Closed loop (-c N -d DURATION): N workers, each with its own keep-alive
// connection, each sending its next request as soon as the previous one is
// answered. Open loop (-rate R): request i is due at start + i/R, whatever
// the answers take; latency runs from that intended time (no coordinated
// omission), workers are added as needed (up to -c), and requests that
// could not be sent on time are counted. -warmup runs first, not measured.
//
// The method, URL, body and header values are templates: {seq} (the
// request's number in this run, from 0; {seq:N} zero-pads it to N digits),
// {uuid} (a random UUID v4) and {prefix} (the -prefix value).
//
// The result is one JSON object on stdout. Errors never stop the run: every
// answer is counted by status, and every failure as a timeout or a
// transport error.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"
)

type headerFlags []string

func (h *headerFlags) String() string     { return strings.Join(*h, ", ") }
func (h *headerFlags) Set(v string) error { *h = append(*h, v); return nil }

type report struct {
	Mode           string         `json:"mode"`
	Concurrency    int            `json:"concurrency"`
	Workers        int            `json:"workers"`
	Connections    int64          `json:"connections"`
	TargetRate     float64        `json:"target_rate"`
	DurationS      float64        `json:"duration_s"`
	WarmupS        float64        `json:"warmup_s"`
	Sent           int            `json:"sent"`
	WarmupRequests int            `json:"warmup_requests"`
	Scheduled      int            `json:"scheduled"`
	Requests       int            `json:"requests"`
	FirstSeq       uint64         `json:"first_seq"`
	Statuses       map[string]int `json:"statuses"`
	Answered       int            `json:"answered"`
	Errors         int            `json:"errors"`
	ErrorKinds     map[string]int `json:"error_kinds"`
	Timeouts       int            `json:"timeouts"`
	Late           int            `json:"late"`
	Unsent         int            `json:"unsent"`
	Rate           float64        `json:"rate"`
	Latency        percentiles    `json:"latency_ms"`
	SendDelay      percentiles    `json:"send_delay_ms"`
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "lookback-loadgen: "+format+"\n", args...)
	os.Exit(2)
}

func main() {
	var headers headerFlags
	method := flag.String("method", "GET", "HTTP method")
	rawURL := flag.String("url", "", "URL template (required)")
	body := flag.String("body", "", "request body template (none when empty)")
	flag.Var(&headers, "H", "header 'Name: value' (value is a template); repeatable")
	prefix := flag.String("prefix", "", "the value of {prefix}")
	concurrency := flag.Int("c", 0, "closed loop: workers (default 1); open loop: most workers (default 512)")
	rate := flag.Float64("rate", 0, "open loop: requests per second (0: closed loop)")
	duration := flag.Duration("d", 10*time.Second, "measured duration")
	warmup := flag.Duration("warmup", 0, "warm-up before the measured duration, not measured")
	timeout := flag.Duration("timeout", 5*time.Second, "per-request timeout (connection included)")
	lateAfter := flag.Duration("late", 5*time.Millisecond, "open loop: a request sent later than this after its intended time counts as late")
	flag.Parse()

	if flag.NArg() > 0 {
		fail("unexpected arguments: %v", flag.Args())
	}
	if *rawURL == "" {
		fail("-url is required")
	}
	if u, err := url.Parse(strings.NewReplacer("{", "", "}", "").Replace(*rawURL)); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		fail("-url must be an http(s) URL: %q", *rawURL)
	}
	if *rate < 0 || *concurrency < 0 || *duration <= 0 || *warmup < 0 || *timeout <= 0 {
		fail("-rate, -c and -warmup must not be negative, -d and -timeout must be positive")
	}
	cfg := &config{method: strings.ToUpper(*method), timeout: *timeout, lateAfter: *lateAfter}
	var err error
	if cfg.url, err = parseTemplate(*rawURL, *prefix); err != nil {
		fail("-url: %v", err)
	}
	if *body != "" {
		cfg.hasBody = true
		if cfg.body, err = parseTemplate(*body, *prefix); err != nil {
			fail("-body: %v", err)
		}
	}
	for _, h := range headers {
		name, value, ok := strings.Cut(h, ":")
		name, value = strings.TrimSpace(name), strings.TrimSpace(value)
		if !ok || name == "" {
			fail("-H must be 'Name: value', not %q", h)
		}
		if strings.EqualFold(name, "Host") {
			cfg.host = value
			continue
		}
		t, err := parseTemplate(value, *prefix)
		if err != nil {
			fail("-H %s: %v", name, err)
		}
		cfg.headers = append(cfg.headers, header{name: name, value: t})
	}

	out := report{Mode: "closed", DurationS: duration.Seconds(), WarmupS: warmup.Seconds()}
	var workers []*worker
	if *rate > 0 {
		out.Mode, out.TargetRate = "open", *rate
		out.Concurrency = *concurrency
		if out.Concurrency == 0 {
			out.Concurrency = 512
		}
		workers, out.FirstSeq = openLoop(cfg, *rate, out.Concurrency, *warmup, *duration)
	} else {
		out.Concurrency = max(1, *concurrency)
		workers, out.FirstSeq = closedLoop(cfg, out.Concurrency, *warmup, *duration)
	}

	warm, measured := newStats(), newStats()
	for _, w := range workers {
		warm.merge(w.warm)
		measured.merge(w.measured)
	}
	out.Workers = len(workers)
	out.Connections = cfg.dials.Load()
	out.WarmupRequests = warm.sent
	out.Sent = warm.sent + measured.sent
	out.Scheduled = measured.scheduled
	out.Requests = measured.sent
	out.Statuses = statusKeys(measured.statuses)
	out.Answered = len(measured.latencies)
	out.Errors, out.ErrorKinds, out.Timeouts = measured.errors, measured.errorKinds, measured.timeouts
	out.Late, out.Unsent = measured.late, measured.unsent
	out.Rate = float64(out.Answered) / duration.Seconds()
	out.Latency = summarize(measured.latencies)
	out.SendDelay = summarize(measured.sendDelays)
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		fail("writing the result: %v", err)
	}
}
