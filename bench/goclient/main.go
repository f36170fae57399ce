// Command goclient is the benchmarks' Go load generator: net/http, as client-go uses it, so that
// the tunnel is also measured with a client that costs little CPU of its own.
//
//	goclient -url https://127.0.0.1:8443/planes/bench/fast/k8s/api/v1/... -ca ca.crt \
//	    [-cert tls.crt -key tls.key] [-token T] [-http2] -concurrency 64 \
//	    [-warmup-requests N | -warmup D] (-requests N | -duration D)
//
// `concurrency` workers send GETs back to back (a closed loop); HTTP/1.1 holds up to one
// connection per worker, HTTP/2 as few as the server's stream limit allows. After the warm-up
// it prints the line {"event":"measuring"}; at the end of the measured part one JSON document:
// requests answered 200, errors, wall seconds, p50/p99/max latency in ms (nearest rank, as
// bench.client.Latencies) and the CPU seconds this process spent in the measured part.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

type options struct {
	url            string
	token          string
	concurrency    int
	requests       int64
	duration       time.Duration
	warmupRequests int64
	warmup         time.Duration
}

type result struct {
	Count      int     `json:"count"`
	Errors     int64   `json:"errors"`
	FirstError string  `json:"firstError,omitempty"`
	Seconds    float64 `json:"seconds"`
	P50Ms      float64 `json:"p50Ms"`
	P99Ms      float64 `json:"p99Ms"`
	MaxMs      float64 `json:"maxMs"`
	CPUSeconds float64 `json:"cpuSeconds"`
	Protocol   string  `json:"protocol"`
}

func main() {
	var o options
	var ca, cert, key string
	var useHTTP2 bool
	flag.StringVar(&o.url, "url", "", "URL to GET")
	flag.StringVar(&ca, "ca", "", "PEM file of the CA that signed the server's certificate")
	flag.StringVar(&cert, "cert", "", "client certificate (PEM), with -key")
	flag.StringVar(&key, "key", "", "client key (PEM)")
	flag.StringVar(&o.token, "token", "", "bearer token")
	flag.BoolVar(&useHTTP2, "http2", false, "HTTP/2 (ALPN h2) instead of HTTP/1.1")
	flag.IntVar(&o.concurrency, "concurrency", 1, "workers sending requests back to back")
	flag.Int64Var(&o.requests, "requests", 0, "requests in the measured part (or -duration)")
	flag.DurationVar(&o.duration, "duration", 0, "length of the measured part (or -requests)")
	flag.Int64Var(&o.warmupRequests, "warmup-requests", 0, "requests before measuring")
	flag.DurationVar(&o.warmup, "warmup", 0, "time before measuring")
	flag.Parse()
	if o.url == "" || ca == "" || o.concurrency < 1 || (o.requests <= 0 && o.duration <= 0) {
		fail("need -url, -ca, -concurrency >= 1 and -requests or -duration")
	}
	client, err := newClient(ca, cert, key, useHTTP2, o.concurrency)
	if err != nil {
		fail(err.Error())
	}
	if o.warmupRequests > 0 || o.warmup > 0 {
		run(client, o, o.warmupRequests, o.warmup)
	}
	fmt.Println(`{"event":"measuring"}`)
	before := cpuSeconds()
	res := run(client, o, o.requests, o.duration)
	res.CPUSeconds = cpuSeconds() - before
	res.Protocol = "HTTP/1.1"
	if useHTTP2 {
		res.Protocol = "HTTP/2"
	}
	out, _ := json.Marshal(res)
	fmt.Println(string(out))
}

func fail(message string) {
	fmt.Fprintln(os.Stderr, "goclient:", message)
	os.Exit(2)
}

func newClient(ca, cert, key string, useHTTP2 bool, concurrency int) (*http.Client, error) {
	pem, err := os.ReadFile(ca)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("no certificate in %s", ca)
	}
	config := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	if cert != "" {
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return nil, err
		}
		config.Certificates = []tls.Certificate{pair}
	}
	transport := &http.Transport{
		TLSClientConfig:     config,
		MaxIdleConns:        concurrency,
		MaxIdleConnsPerHost: concurrency,
		DisableCompression:  true,
		ForceAttemptHTTP2:   useHTTP2,
	}
	if !useHTTP2 {
		transport.MaxConnsPerHost = concurrency
		// A non-nil empty map turns HTTP/2 off whatever the server offers.
		transport.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	return &http.Client{Transport: transport}, nil
}

// run sends `requests` GETs in all, or for `duration`, from o.concurrency workers.
func run(client *http.Client, o options, requests int64, duration time.Duration) result {
	left := int64(math.MaxInt64)
	if requests > 0 {
		left = requests
	}
	deadline := time.Now().Add(100 * 365 * 24 * time.Hour)
	if duration > 0 {
		deadline = time.Now().Add(duration)
	}
	var errors atomic.Int64
	var firstError atomic.Value
	perWorker := make([][]time.Duration, o.concurrency)
	var wg sync.WaitGroup
	started := time.Now()
	for w := range o.concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			samples := make([]time.Duration, 0, 4096)
			for atomic.AddInt64(&left, -1) >= 0 && time.Now().Before(deadline) {
				t0 := time.Now()
				if err := get(client, o); err != nil {
					errors.Add(1)
					firstError.CompareAndSwap(nil, err.Error())
					continue
				}
				samples = append(samples, time.Since(t0))
			}
			perWorker[w] = samples
		}()
	}
	wg.Wait()
	elapsed := time.Since(started)
	var all []time.Duration
	for _, samples := range perWorker {
		all = append(all, samples...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	res := result{
		Count:   len(all),
		Errors:  errors.Load(),
		Seconds: elapsed.Seconds(),
		P50Ms:   percentileMs(all, 50),
		P99Ms:   percentileMs(all, 99),
		MaxMs:   percentileMs(all, 100),
	}
	if first, ok := firstError.Load().(string); ok {
		res.FirstError = first
	}
	return res
}

func get(client *http.Client, o options) error {
	request, err := http.NewRequest(http.MethodGet, o.url, nil)
	if err != nil {
		return err
	}
	if o.token != "" {
		request.Header.Set("Authorization", "Bearer "+o.token)
	}
	response, err := client.Do(request)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, response.Body)
	response.Body.Close()
	if err != nil {
		return err
	}
	if response.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", response.StatusCode)
	}
	return nil
}

// percentileMs is the nearest-rank percentile q of sorted samples, in ms (0 when there are none:
// the harness fails a run that answered nothing).
func percentileMs(sorted []time.Duration, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(q/100*float64(len(sorted)))) - 1
	rank = max(0, min(len(sorted)-1, rank))
	return float64(sorted[rank]) / float64(time.Millisecond)
}

func cpuSeconds() float64 {
	var usage syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &usage); err != nil {
		return math.NaN()
	}
	return time.Duration(usage.Utime.Nano() + usage.Stime.Nano()).Seconds()
}
