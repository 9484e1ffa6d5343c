package main

import (
	"bytes"
	"context"
	cryptorand "crypto/rand"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

type header struct {
	name  string
	value template
}

type config struct {
	method    string
	url       template
	body      template
	hasBody   bool
	headers   []header
	host      string // a Host header, if given
	timeout   time.Duration
	lateAfter time.Duration
	dials     atomic.Int64 // TCP connections opened, all workers
}

// worker sends requests one at a time over its own keep-alive connection.
type worker struct {
	cfg      *config
	client   *http.Client
	rng      *rand.Rand
	warm     *stats
	measured *stats
}

func newWorker(cfg *config) *worker {
	dialer := &net.Dialer{Timeout: cfg.timeout, KeepAlive: 30 * time.Second}
	transport := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			cfg.dials.Add(1)
			return dialer.DialContext(ctx, network, addr)
		},
		MaxIdleConns:        1,
		MaxIdleConnsPerHost: 1,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	var seed [16]byte
	_, _ = cryptorand.Read(seed[:])
	rng := rand.New(rand.NewPCG(binary.LittleEndian.Uint64(seed[:8]), binary.LittleEndian.Uint64(seed[8:])))
	return &worker{cfg: cfg, client: &http.Client{Transport: transport, CheckRedirect: keepRedirect}, rng: rng, warm: newStats(), measured: newStats()}
}

func (w *worker) phase(measured bool) *stats {
	if measured {
		return w.measured
	}
	return w.warm
}

// send makes one request; latency runs from origin (the actual send time in
// a closed loop, the intended one in an open loop). It never fails: every
// outcome is counted.
func (w *worker) send(seq uint64, measured bool, origin time.Time) {
	s := w.phase(measured)
	s.sent++
	cfg := w.cfg
	ctx, cancel := context.WithTimeout(context.Background(), cfg.timeout)
	defer cancel()
	var body io.Reader
	if cfg.hasBody {
		body = bytes.NewReader(cfg.body.render(nil, seq, w.rng))
	}
	req, err := http.NewRequestWithContext(ctx, cfg.method, cfg.url.string(seq, w.rng), body)
	if err != nil {
		s.addError(err)
		return
	}
	for _, h := range cfg.headers {
		req.Header.Set(h.name, h.value.string(seq, w.rng))
	}
	if cfg.host != "" {
		req.Host = cfg.host
	}
	resp, err := w.client.Do(req)
	if err == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if err != nil {
		s.addError(err)
		return
	}
	s.statuses[resp.StatusCode]++
	s.latencies = append(s.latencies, time.Since(origin))
}

// ---- closed loop ---------------------------------------------------------

// schedule hands out sequence numbers and phases under one lock, reading the
// clock inside it: the warm-up's numbers all come before the measured ones.
type schedule struct {
	mu            sync.Mutex
	seq           uint64
	measureFrom   time.Time
	stopAt        time.Time
	firstMeasured uint64
	anyMeasured   bool
}

func (s *schedule) next() (seq uint64, measured, stop bool, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now = time.Now()
	if !now.Before(s.stopAt) {
		return 0, false, true, now
	}
	measured = !now.Before(s.measureFrom)
	if measured && !s.anyMeasured {
		s.anyMeasured, s.firstMeasured = true, s.seq
	}
	seq = s.seq
	s.seq++
	return seq, measured, false, now
}

func closedLoop(cfg *config, concurrency int, warmup, duration time.Duration) ([]*worker, uint64) {
	begin := time.Now()
	sched := &schedule{measureFrom: begin.Add(warmup), stopAt: begin.Add(warmup + duration)}
	workers := make([]*worker, concurrency)
	var wg sync.WaitGroup
	for i := range workers {
		w := newWorker(cfg)
		workers[i] = w
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				seq, measured, stop, now := sched.next()
				if stop {
					return
				}
				w.phase(measured).scheduled++
				w.send(seq, measured, now)
			}
		}()
	}
	wg.Wait()
	if !sched.anyMeasured {
		sched.firstMeasured = sched.seq
	}
	return workers, sched.firstMeasured
}

// ---- open loop -----------------------------------------------------------

type job struct {
	seq      uint64
	intended time.Time
	measured bool
}

// openLoop sends request i at begin + i/rate whatever the answers take. A
// request goes to an idle worker; with none idle a new worker (and
// connection) is started, up to maxWorkers; past that it waits in a queue
// and is sent late. Requests still queued one timeout after the end are
// given up (counted as unsent).
func openLoop(cfg *config, rate float64, maxWorkers int, warmup, duration time.Duration) ([]*worker, uint64) {
	begin := time.Now().Add(10 * time.Millisecond)
	measureFrom, stopAt := begin.Add(warmup), begin.Add(warmup+duration)
	giveUpAt := stopAt.Add(cfg.timeout)
	idle := make(chan job)
	backlog := make(chan job, 1<<16)
	var (
		mu      sync.Mutex
		workers []*worker
		wg      sync.WaitGroup
	)
	run := func(w *worker, j job) {
		s := w.phase(j.measured)
		s.scheduled++
		now := time.Now()
		if now.After(giveUpAt) {
			s.unsent++
			return
		}
		delay := now.Sub(j.intended)
		s.sendDelays = append(s.sendDelays, delay)
		if delay > cfg.lateAfter {
			s.late++
		}
		w.send(j.seq, j.measured, j.intended)
	}
	spawn := func(first job) {
		w := newWorker(cfg)
		mu.Lock()
		workers = append(workers, w)
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			j, ok := first, true
			for {
				run(w, j)
				select { // the queue first: its requests are already late
				case j, ok = <-backlog:
				default:
					select {
					case j, ok = <-backlog:
					case j = <-idle:
					}
				}
				if !ok {
					return
				}
			}
		}()
	}
	var firstMeasured uint64
	anyMeasured, started := false, 0
	for i := uint64(0); ; i++ {
		intended := begin.Add(time.Duration(float64(i) * float64(time.Second) / rate))
		if !intended.Before(stopAt) {
			if !anyMeasured {
				firstMeasured = i
			}
			break
		}
		if d := time.Until(intended); d > 0 {
			time.Sleep(d)
		}
		j := job{seq: i, intended: intended, measured: !intended.Before(measureFrom)}
		if j.measured && !anyMeasured {
			anyMeasured, firstMeasured = true, i
		}
		select {
		case idle <- j:
			continue
		default:
		}
		if started < maxWorkers {
			started++
			spawn(j)
			continue
		}
		backlog <- j
	}
	close(backlog)
	wg.Wait()
	return workers, firstMeasured
}

// keepRedirect answers a redirect as it is (a 302 is the response measured:
// a link's Location points at a store the benchmark must not fetch).
func keepRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
