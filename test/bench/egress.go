package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/agentrun/agentrun/internal/egress"
	"github.com/agentrun/agentrun/internal/egressforward"
	"github.com/agentrun/agentrun/internal/netguard"
	"github.com/agentrun/agentrun/internal/testing/testenv"
)

// upstreamName is the simulated upstream's name: the runs' policies allow
// it, the bench's table resolver gives its loopback address, and its
// certificate, from a CA made for the step, names it.
const upstreamName = "upstream.bench.test"

// egressPath is how a client reaches the upstream.
type egressPath int

const (
	// direct: the client connects to the upstream itself.
	direct egressPath = iota
	// viaProxy: the client connects to the run's Unix socket and sends a
	// CONNECT, as the forwarder inside a run's container does for its
	// tools.
	viaProxy
	// viaForwarder: the client connects over TCP to a forwarder
	// (internal/egressforward, in the bench's process) that carries the
	// connection to the run's socket: the whole path of a run's tools.
	viaForwarder
)

var egressPaths = []egressPath{direct, viaProxy, viaForwarder}

func (p egressPath) String() string {
	return [...]string{"direct", "proxy (Unix socket)", "forwarder + proxy"}[p]
}

// egressRepetition is one egress step's figures.
type egressRepetition struct {
	// download are how long the whole download took in each round, by
	// path, from the request (its connection included) to the last byte.
	download [3][]time.Duration
	// downloadCPU is the CPU the bench's process (client, proxy, forwarder
	// and upstream alike) spent on each of them: what a path costs,
	// whatever else loads the machine.
	downloadCPU [3][]time.Duration
	// firstByte are the small requests' times to first byte, by path.
	firstByte [3][]time.Duration
	// concurrent is the connections held at once through the forwarders
	// and the proxy, concurrentDirect the same to the upstream directly.
	concurrent, concurrentDirect concurrentResult
}

// concurrentResult is what became of connections opened all at once.
type concurrentResult struct {
	ok, failed int
	// overLimit are the connections the proxy answered 429 because their
	// run had its bound open, by the servers' counts.
	overLimit int64
	// firstError is one failure's message, for the log.
	firstError string
	wall       time.Duration
}

// refusedOther are the failures that were not the run's bound.
func (c concurrentResult) refusedOther() int { return c.failed - int(c.overLimit) }

// egressStep measures the egress proxy against the same HTTPS traffic sent
// directly, -reps times: a download of -egress-mib MiB, -egress-requests
// small requests each on a new connection (as a command-line tool makes
// them: no keep-alive, no TLS session resumed), and -egress-conns
// connections at once spread over -egress-runs runs, each run a proxy server
// with a policy of its own.
func egressStep(cfg config) ([]egressRepetition, error) {
	addr, err := netip.ParseAddr(cfg.egressAddress)
	if err != nil || !addr.Is4() || !addr.IsLoopback() {
		return nil, fmt.Errorf("-egress-address %q: want an IPv4 loopback address", cfg.egressAddress)
	}
	up, err := startUpstream(addr)
	if err != nil {
		return nil, err
	}
	defer func() { _ = up.srv.Close() }()
	dir, err := os.MkdirTemp("", "agentrun-bench-egress-")
	if err != nil {
		return nil, err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	perRun := (cfg.egressConns + cfg.egressRuns - 1) / cfg.egressRuns
	b := &egressBench{up: up, dir: dir, resolver: tableResolver{upstreamName: addr}}
	// The upstream is on loopback, which the proxy refuses unless the host
	// allows it, as a test host does.
	proxyConfig := egress.Config{
		Resolver:     b.resolver,
		Destinations: netguard.Destinations{Allowed: []netip.Prefix{netip.PrefixFrom(addr, 32)}},
		MaxConns:     perRun,
	}
	b.bounded = egress.New(proxyConfig)
	// The download and the small requests go through a run with the
	// default bound: a connection just closed by the client may hold its
	// slot a moment longer, and its successor must not meet the bound.
	proxyConfig.MaxConns = 0
	b.single = egress.New(proxyConfig)
	var reps []egressRepetition
	for i := range cfg.reps {
		step("egress (%d/%d): a %d MiB download, %d requests on new connections, %d connections at once from %d runs (bound %d a run); direct and through the proxy",
			i+1, cfg.reps, cfg.egressMiB, cfg.egressRequests, cfg.egressConns, cfg.egressRuns, perRun)
		rep, err := b.repetition(cfg)
		if err != nil {
			return nil, err
		}
		step("egress (%d/%d): download %.0f MiB/s direct, %.0f through the proxy, %.0f with the forwarder; first byte p99 %.2f ms direct, %.2f, %.2f; at once: %d of %d held, %d refused by the bound, %d otherwise%s",
			i+1, cfg.reps, rep.mibPerS(direct, cfg), rep.mibPerS(viaProxy, cfg), rep.mibPerS(viaForwarder, cfg),
			rep.firstByteMs(direct, 99), rep.firstByteMs(viaProxy, 99), rep.firstByteMs(viaForwarder, 99),
			rep.concurrent.ok, cfg.egressConns, rep.concurrent.overLimit, rep.concurrent.refusedOther(), rep.concurrent.firstErrorSuffix())
		reps = append(reps, rep)
	}
	return reps, nil
}

// mibPerS is the median download throughput of the repetition's rounds on
// path p.
func (r egressRepetition) mibPerS(p egressPath, cfg config) float64 {
	return spreadOf(r.download[p], func(d time.Duration) float64 { return float64(cfg.egressMiB) / d.Seconds() }).Median
}

// cpuMsPerMiB is the median CPU a MiB of the download cost on path p, over
// the rounds.
func (r egressRepetition) cpuMsPerMiB(p egressPath, cfg config) float64 {
	return spreadOf(r.downloadCPU[p], func(d time.Duration) float64 { return ms(d) / float64(cfg.egressMiB) }).Median
}

// downloadRatio is the median over the rounds of p's throughput over the
// direct one.
func (r egressRepetition) downloadRatio(p egressPath) float64 {
	rounds := make([]int, len(r.download[p]))
	for i := range rounds {
		rounds[i] = i
	}
	return spreadOf(rounds, func(i int) float64 { return r.download[direct][i].Seconds() / r.download[p][i].Seconds() }).Median
}

func (r egressRepetition) firstByteMs(p egressPath, pct float64) float64 {
	return ms(percentile(r.firstByte[p], pct))
}

func (c concurrentResult) firstErrorSuffix() string {
	if c.firstError == "" {
		return ""
	}
	return " (" + c.firstError + ")"
}

// downloadRounds is how many times a repetition downloads on each path, the
// paths in turn. A download on loopback takes a fraction of a second, in
// which another process on the machine can take a core: a repetition's
// figures are the median of its rounds, and its ratio the median of the
// rounds' own ratios (the two downloads of a round are next to each other
// in time).
const downloadRounds = 5

// egressBench is what the repetitions share: the upstream and the proxy.
type egressBench struct {
	up       *upstream
	resolver tableResolver
	// bounded serves the runs of connections at once, single the run of
	// the download and the small requests.
	bounded, single *egress.Proxy
	dir             string // the runs' sockets
}

// repetition starts the runs' servers and forwarders afresh, so that each
// repetition's bounds and counts start empty, and measures.
func (b *egressBench) repetition(cfg config) (rep egressRepetition, err error) {
	runs, err := startEgressRuns(b.bounded, b.dir, "run", cfg.egressRuns)
	defer stopEgressRuns(runs)
	if err != nil {
		return rep, err
	}
	one, err := startEgressRuns(b.single, b.dir, "single", 1)
	defer stopEgressRuns(one)
	if err != nil {
		return rep, err
	}
	perRun := (cfg.egressConns + cfg.egressRuns - 1) / cfg.egressRuns
	rep.concurrentDirect = b.concurrent(direct, runs, perRun)
	rep.concurrent = b.concurrent(viaForwarder, runs, perRun)
	// The paths take turns, so that whatever else loads the machine weighs
	// on each alike.
	size := int64(cfg.egressMiB) << 20
	for range downloadRounds {
		for _, p := range egressPaths {
			d, cpu, err := download(b.transport(p, one[0], false), size)
			if err != nil {
				return rep, fmt.Errorf("the download %s: %w", p, err)
			}
			rep.download[p] = append(rep.download[p], d)
			rep.downloadCPU[p] = append(rep.downloadCPU[p], cpu)
		}
	}
	clients := make([]*http.Client, len(egressPaths))
	for _, p := range egressPaths {
		clients[p] = &http.Client{Transport: b.transport(p, one[0], false), Timeout: time.Minute}
	}
	for range cfg.egressRequests {
		for _, p := range egressPaths {
			d, err := firstByte(clients[p])
			if err != nil {
				return rep, fmt.Errorf("a small request %s: %w", p, err)
			}
			rep.firstByte[p] = append(rep.firstByte[p], d)
		}
	}
	// Every connection through the proxy must have been counted as allowed:
	// a figure from connections that went around it would measure nothing.
	// (A failed connection at once is reported as such.)
	if allowed, want := one[0].server.Stats().Allowed, int64(2*downloadRounds+2*cfg.egressRequests); allowed != want {
		return rep, fmt.Errorf("the proxy allowed %d connections, the bench made %d through it", allowed, want)
	}
	var allowed int64
	for _, r := range runs {
		allowed += r.server.Stats().Allowed
	}
	if want := int64(rep.concurrent.ok); rep.concurrent.failed == 0 && allowed != want {
		return rep, fmt.Errorf("the proxy allowed %d connections at once, the bench held %d through it", allowed, want)
	}
	return rep, nil
}

// concurrent opens perRun connections for each run all at once (through
// the run's forwarder, or directly), each with a small request, holds them
// until all are open, then downloads 1 MiB on each of them at once.
func (b *egressBench) concurrent(p egressPath, runs []egressRun, perRun int) concurrentResult {
	var (
		opened, done sync.WaitGroup
		ok           atomic.Int64
		mu           sync.Mutex
		res          concurrentResult
	)
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		res.failed++
		if res.firstError == "" {
			res.firstError = err.Error()
		}
	}
	all := make(chan struct{})
	start := time.Now()
	for _, r := range runs {
		for range perRun {
			opened.Add(1)
			done.Add(1)
			go func() {
				defer done.Done()
				t := b.transport(p, r, true)
				defer t.CloseIdleConnections()
				c := &http.Client{Transport: t, Timeout: 2 * time.Minute}
				_, err := get(c, "/small")
				opened.Done()
				<-all
				if err == nil {
					err = heldGet(c, "/bytes?n="+strconv.Itoa(1<<20))
				}
				if err != nil {
					fail(err)
					return
				}
				ok.Add(1)
			}()
		}
	}
	opened.Wait()
	close(all)
	done.Wait()
	res.wall, res.ok = time.Since(start), int(ok.Load())
	if p != direct {
		for _, r := range runs {
			res.overLimit += r.server.Stats().OverLimit
		}
	}
	return res
}

// heldGet is a request that must go on the client's open connection.
func heldGet(c *http.Client, path string) error {
	reused := false
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
		GotConn: func(info httptrace.GotConnInfo) { reused = info.Reused },
	})
	if _, err := getContext(ctx, c, path); err != nil {
		return err
	}
	if !reused {
		return errors.New("the connection was not kept open")
	}
	return nil
}

// download fetches size bytes through t and returns how long it took and
// the CPU the process spent meanwhile.
func download(t *http.Transport, size int64) (wall, cpu time.Duration, err error) {
	defer t.CloseIdleConnections()
	start, cpu0 := time.Now(), processCPU()
	n, err := get(&http.Client{Transport: t, Timeout: 10 * time.Minute}, "/bytes?n="+strconv.FormatInt(size, 10))
	if err != nil {
		return 0, 0, err
	}
	if n != size {
		return 0, 0, fmt.Errorf("got %d bytes of %d", n, size)
	}
	return time.Since(start), processCPU() - cpu0, nil
}

// processCPU is the user and system CPU time the bench's process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// firstByte makes a small request and returns the time from the start of
// the request (before its connection) to the first byte of the answer.
func firstByte(c *http.Client) (time.Duration, error) {
	var first time.Time
	// The last call is the answer's: with a proxy, the CONNECT's answer
	// comes first.
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
		GotFirstResponseByte: func() { first = time.Now() },
	})
	start := time.Now()
	if _, err := getContext(ctx, c, "/small"); err != nil {
		return 0, err
	}
	return first.Sub(start), nil
}

func get(c *http.Client, path string) (int64, error) {
	return getContext(context.Background(), c, path)
}

// getContext gets path from the upstream over HTTPS, reads the whole answer
// and returns its size.
func getContext(ctx context.Context, c *http.Client, path string) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+upstreamName+path, nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer func() { _ = resp.Body.Close() }()
	n, err := drain(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("answered %s", resp.Status)
	}
	return n, err
}

// drain reads r to its end in large reads, as a download tool does
// (io.Discard would read in 8 KiB pieces).
func drain(r io.Reader) (int64, error) {
	buf := make([]byte, 64<<10)
	var total int64
	for {
		n, err := r.Read(buf)
		total += int64(n)
		if errors.Is(err, io.EOF) {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// transport reaches the upstream by path, through run for the proxied
// paths; keepAlive false makes a new connection for each request. It keeps
// no TLS sessions, so every connection makes a full handshake, as a new
// process of a command-line tool does.
func (b *egressBench) transport(p egressPath, run egressRun, keepAlive bool) *http.Transport {
	t := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: b.up.roots, NextProtos: []string{"http/1.1"}},
		DisableKeepAlives: !keepAlive,
	}
	var d net.Dialer
	switch p {
	case direct:
		t.DialContext = func(ctx context.Context, network, address string) (net.Conn, error) {
			return b.resolver.dial(ctx, &d, network, address)
		}
	case viaProxy:
		// The proxy's URL names no real host: every connection to it is
		// the run's socket.
		t.Proxy = http.ProxyURL(&url.URL{Scheme: "http", Host: "egress.sock"})
		t.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", run.socket)
		}
	case viaForwarder:
		t.Proxy = http.ProxyURL(&url.URL{Scheme: "http", Host: run.forwarder.Addr().String()})
	}
	return t
}

// tableResolver is the bench's DNS: names to addresses, for the proxy and
// the direct clients alike.
type tableResolver map[string]netip.Addr

func (t tableResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	a, ok := t[host]
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	return []netip.Addr{a}, nil
}

func (t tableResolver) dial(ctx context.Context, d *net.Dialer, network, address string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, err
	}
	addrs, err := t.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, err
	}
	return d.DialContext(ctx, network, net.JoinHostPort(addrs[0].String(), port))
}

// upstream is the simulated site: HTTPS on port 443 of a loopback address,
// /small answering a few bytes and /bytes?n=N answering N bytes.
type upstream struct {
	srv   *http.Server
	roots *x509.CertPool
}

func startUpstream(addr netip.Addr) (*upstream, error) {
	ca, err := testenv.NewCA("agentrun bench egress CA")
	if err != nil {
		return nil, err
	}
	cert, err := ca.IssueTLS(upstreamName, upstreamName)
	if err != nil {
		return nil, err
	}
	// Port 443: the proxy checks the TLS ClientHello's name on that port
	// only, and the bench measures the path runs take.
	l, err := net.Listen("tcp", netip.AddrPortFrom(addr, 443).String())
	if err != nil {
		return nil, fmt.Errorf("the simulated upstream (-egress-address): %w", err)
	}
	srv := &http.Server{
		Handler:           http.HandlerFunc(serveUpstream),
		ReadHeaderTimeout: time.Minute,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}},
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	go func() { _ = srv.ServeTLS(l, "", "") }()
	return &upstream{srv: srv, roots: ca.Pool()}, nil
}

// chunk is what /bytes writes, again and again.
var chunk = make([]byte, 256<<10)

func serveUpstream(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/small":
		_, _ = io.WriteString(w, "ok\n")
	case "/bytes":
		n, err := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
		if err != nil || n < 0 {
			http.Error(w, "n: a number of bytes", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		for n > 0 {
			k, err := w.Write(chunk[:min(n, int64(len(chunk)))])
			if err != nil {
				return
			}
			n -= int64(k)
		}
	default:
		http.NotFound(w, r)
	}
}

// egressRun is one run as the host would serve it: the proxy on a socket
// of its own with the run's policy, and the forwarder its container would
// run, here in the bench's process.
type egressRun struct {
	socket    string
	server    *egress.Server
	forwarder net.Listener
}

// startEgressRuns starts n runs on p, named prefix-0 to prefix-(n-1), each
// allowed the upstream and a name of its own.
func startEgressRuns(p *egress.Proxy, dir, prefix string, n int) ([]egressRun, error) {
	var runs []egressRun
	for i := range n {
		name := fmt.Sprintf("%s-%d", prefix, i)
		policy, err := egress.ParsePolicy(upstreamName, name+".bench.test")
		if err != nil {
			return runs, err
		}
		socket := filepath.Join(dir, name+".sock")
		_ = os.Remove(socket) // the previous repetition's
		l, err := net.Listen("unix", socket)
		if err != nil {
			return runs, err
		}
		r := egressRun{socket: socket, server: p.Serve(l, policy, nil, nil)}
		if r.forwarder, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			_ = r.server.Close()
			return runs, err
		}
		go egressforward.Serve(r.forwarder, socket, egressforward.Defaults.MaxConns)
		runs = append(runs, r)
	}
	return runs, nil
}

func stopEgressRuns(runs []egressRun) {
	for _, r := range runs {
		_ = r.forwarder.Close()
		_ = r.server.Close()
	}
}

// namedSpread is one figure of a step, under its key.
type namedSpread struct {
	key    string
	spread spread
}

// egressFigures are the egress step's figures: each proxied one beside the
// direct one of the same repetitions, and their ratio or difference taken
// within each repetition.
func egressFigures(reps []egressRepetition, cfg config) []namedSpread {
	of := func(f func(egressRepetition) float64) spread { return spreadOf(reps, f) }
	mibPerS := func(p egressPath) spread { return of(func(r egressRepetition) float64 { return r.mibPerS(p, cfg) }) }
	cpuPerMiB := func(p egressPath) spread {
		return of(func(r egressRepetition) float64 { return r.cpuMsPerMiB(p, cfg) })
	}
	p99 := func(p egressPath) spread { return of(func(r egressRepetition) float64 { return r.firstByteMs(p, 99) }) }
	added := func(p egressPath) spread {
		return of(func(r egressRepetition) float64 { return r.firstByteMs(p, 99) - r.firstByteMs(direct, 99) })
	}
	return []namedSpread{
		{"egress_download_ratio", of(func(r egressRepetition) float64 { return r.downloadRatio(viaProxy) })},
		{"egress_download_ratio_forwarder", of(func(r egressRepetition) float64 { return r.downloadRatio(viaForwarder) })},
		{"egress_download_direct_mib_per_s", mibPerS(direct)},
		{"egress_download_proxy_mib_per_s", mibPerS(viaProxy)},
		{"egress_download_forwarder_mib_per_s", mibPerS(viaForwarder)},
		{"egress_download_cpu_ms_per_mib_direct", cpuPerMiB(direct)},
		{"egress_download_cpu_ms_per_mib_proxy", cpuPerMiB(viaProxy)},
		{"egress_download_cpu_ms_per_mib_forwarder", cpuPerMiB(viaForwarder)},
		{"egress_first_byte_p99_added_ms", added(viaProxy)},
		{"egress_first_byte_p99_added_forwarder_ms", added(viaForwarder)},
		{"egress_first_byte_p99_direct_ms", p99(direct)},
		{"egress_first_byte_p99_proxy_ms", p99(viaProxy)},
		{"egress_first_byte_p99_forwarder_ms", p99(viaForwarder)},
		{"egress_at_once_refused_other", of(func(r egressRepetition) float64 { return float64(r.concurrent.refusedOther()) })},
		{"egress_at_once_over_limit", of(func(r egressRepetition) float64 { return float64(r.concurrent.overLimit) })},
		{"egress_at_once_direct_failed", of(func(r egressRepetition) float64 { return float64(r.concurrentDirect.failed) })},
	}
}

// printEgress prints the egress step's table, by path.
func printEgress(reps []egressRepetition, cfg config) {
	fmt.Printf("\negress: a %d MiB download (%d rounds a repetition, the paths in turn) and %d small requests on new connections, by path, %d repetition(s); median [min, max]\n",
		cfg.egressMiB, downloadRounds, cfg.egressRequests, len(reps))
	fmt.Printf("%-46s %26s %26s %26s %26s %26s\n", "path", "download MiB/s", "CPU ms a MiB", "first byte p50 ms", "p95 ms", "p99 ms")
	for _, p := range egressPaths {
		fmt.Printf("%-46s %26s %26s", p, spreadOf(reps, func(r egressRepetition) float64 { return r.mibPerS(p, cfg) }),
			spreadOf(reps, func(r egressRepetition) float64 { return r.cpuMsPerMiB(p, cfg) }))
		for _, pct := range []float64{50, 95, 99} {
			fmt.Printf(" %26s", spreadOf(reps, func(r egressRepetition) float64 { return r.firstByteMs(p, pct) }))
		}
		fmt.Println()
	}
	wall := func(c func(egressRepetition) concurrentResult) spread {
		return spreadOf(reps, func(r egressRepetition) float64 { return ms(c(r).wall) })
	}
	fmt.Printf("%d connections at once from %d runs, each a small request then 1 MiB: %s ms direct, %s ms through the forwarders and the proxy\n",
		cfg.egressConns, cfg.egressRuns,
		wall(func(r egressRepetition) concurrentResult { return r.concurrentDirect }),
		wall(func(r egressRepetition) concurrentResult { return r.concurrent }))
}
