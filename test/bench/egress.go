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

	"github.com/agentrun/agentrun/internal/credential"
	"github.com/agentrun/agentrun/internal/egress"
	"github.com/agentrun/agentrun/internal/egressforward"
	"github.com/agentrun/agentrun/internal/intercept"
	"github.com/agentrun/agentrun/internal/netguard"
	"github.com/agentrun/agentrun/internal/testing/testenv"
)

// upstreamName is the simulated upstream's name: the runs' policies allow
// it, the bench's table resolver gives its loopback address, and its
// certificate, from a CA made for the step, names it.
const upstreamName = "upstream.bench.test"

// credentialedName is the same upstream under a second name, which the
// download's run holds a credential for: the proxy ends TLS for it and adds
// the credential, where it tunnels upstreamName untouched.
const credentialedName = "credentialed.bench.test"

// benchToken is the credential the proxy adds to credentialedName's
// requests, a bearer token in their Authorization header.
const benchToken = "agentrun-bench-token-c0ffee"

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
	// viaCredential: as viaForwarder, to credentialedName: the proxy ends
	// the client's TLS with the run's CA, which the client trusts, adds
	// the credential and sends the request over TLS of its own to the
	// upstream, verified against the upstream's CA.
	viaCredential
	pathCount
)

var egressPaths = []egressPath{direct, viaProxy, viaForwarder, viaCredential}

func (p egressPath) String() string {
	return [...]string{"direct", "proxy (Unix socket)", "forwarder + proxy", "forwarder + proxy, credential added"}[p]
}

// key names the path in the figures' keys.
func (p egressPath) key() string { return [...]string{"direct", "proxy", "forwarder", "credential"}[p] }

// url is path's URL on the upstream, under the name the path asks for.
func (p egressPath) url(path string) string {
	if p == viaCredential {
		return "https://" + credentialedName + path
	}
	return "https://" + upstreamName + path
}

// egressRepetition is one egress step's figures.
type egressRepetition struct {
	// download is the download as fast as the machine goes: on loopback,
	// bound by the CPU of the paths' TLS ends and hops, which it measures.
	download downloads
	// atLink is the same download with the upstream's answer paced at
	// -egress-link-mbit, as a real upstream's comes over the host's link
	// (empty at 0): what a run waits for.
	atLink downloads
	// firstByte are the small requests' times to first byte, by path.
	firstByte [pathCount][]time.Duration
	// concurrent is the connections held at once through the forwarders
	// and the proxy, concurrentDirect the same to the upstream directly.
	concurrent, concurrentDirect concurrentResult
}

// downloads are a repetition's downloads of one kind, by path.
type downloads struct {
	// wall are how long the whole download took in each round, from the
	// request (its connection included) to the last byte.
	wall [pathCount][]time.Duration
	// cpu is the CPU the bench's process (client, proxy, forwarder and
	// upstream alike) spent on each of them: what a path costs, whatever
	// else loads the machine.
	cpu [pathCount][]time.Duration
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
// them: no keep-alive, no TLS session resumed), both also to a host the
// run holds a credential for, and -egress-conns
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
	b := &egressBench{up: up, dir: dir, resolver: tableResolver{upstreamName: addr, credentialedName: addr}}
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
	injector, err := b.credentialed()
	if err != nil {
		return nil, err
	}
	defer injector.Close()
	var reps []egressRepetition
	for i := range cfg.reps {
		step("egress (%d/%d): a %d MiB download, %d requests on new connections, %d connections at once from %d runs (bound %d a run); direct and through the proxy",
			i+1, cfg.reps, cfg.egressMiB, cfg.egressRequests, cfg.egressConns, cfg.egressRuns, perRun)
		rep, err := b.repetition(cfg)
		if err != nil {
			return nil, err
		}
		for _, k := range downloadKinds(cfg) {
			d := k.of(rep)
			step("egress (%d/%d): download%s %.1f MiB/s direct, %.1f through the proxy, %.1f with the forwarder, %.1f with a credential added",
				i+1, cfg.reps, k.name, d.mibPerS(direct, cfg), d.mibPerS(viaProxy, cfg), d.mibPerS(viaForwarder, cfg), d.mibPerS(viaCredential, cfg))
		}
		step("egress (%d/%d): first byte p99 %.2f ms direct, %.2f, %.2f, %.2f; at once: %d of %d held, %d refused by the bound, %d otherwise%s",
			i+1, cfg.reps,
			rep.firstByteMs(direct, 99), rep.firstByteMs(viaProxy, 99), rep.firstByteMs(viaForwarder, 99), rep.firstByteMs(viaCredential, 99),
			rep.concurrent.ok, cfg.egressConns, rep.concurrent.overLimit, rep.concurrent.refusedOther(), rep.concurrent.firstErrorSuffix())
		reps = append(reps, rep)
	}
	return reps, nil
}

// credentialed makes the download's run's credential for credentialedName,
// as the host makes a run's (internal/egressgate): the run's CA, which the
// bench's clients trust for that name, and the injector, which verifies the
// upstream against the upstream's CA and dials through the proxy.
func (b *egressBench) credentialed() (*intercept.Injector, error) {
	format, err := credential.ParseFormat("Bearer {}")
	if err != nil {
		return nil, err
	}
	ca, err := intercept.NewAuthority([]string{credentialedName}, 24*time.Hour)
	if err != nil {
		return nil, err
	}
	creds := map[string]intercept.Credential{credentialedName: {Header: "Authorization", Format: format, Value: benchToken}}
	in, err := intercept.NewInjector(creds, b.up.roots, b.single.Dial, nil)
	if err != nil {
		return nil, err
	}
	b.runRoots = x509.NewCertPool()
	b.runRoots.AppendCertsFromPEM(ca.CertPEM())
	b.terminator = intercept.NewTerminator(ca, in)
	return in, nil
}

// mibPerS is the median download throughput of the rounds on path p.
func (d downloads) mibPerS(p egressPath, cfg config) float64 {
	return spreadOf(d.wall[p], func(w time.Duration) float64 { return float64(cfg.egressMiB) / w.Seconds() }).Median
}

// cpuMsPerMiB is the median CPU a MiB of the download cost on path p, over
// the rounds.
func (d downloads) cpuMsPerMiB(p egressPath, cfg config) float64 {
	return spreadOf(d.cpu[p], func(c time.Duration) float64 { return ms(c) / float64(cfg.egressMiB) }).Median
}

// ratio is the median over the rounds of p's throughput over the direct
// one.
func (d downloads) ratio(p egressPath) float64 {
	rounds := make([]int, len(d.wall[p]))
	for i := range rounds {
		rounds[i] = i
	}
	return spreadOf(rounds, func(i int) float64 { return d.wall[direct][i].Seconds() / d.wall[p][i].Seconds() }).Median
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

// linkRounds is the same for the download paced at the link's speed: each
// of its downloads takes the link's time (0.84 s for 100 MiB at 1 Gbit/s),
// which the machine's load moves far less, and five rounds would add 17
// seconds a repetition.
const linkRounds = 3

// egressBench is what the repetitions share: the upstream and the proxy.
type egressBench struct {
	up       *upstream
	resolver tableResolver
	// bounded serves the runs of connections at once, single the run of
	// the download and the small requests.
	bounded, single *egress.Proxy
	dir             string // the runs' sockets
	// terminator serves the single run's connections to credentialedName,
	// its certificates from the run's CA, which runRoots holds.
	terminator egress.Terminator
	runRoots   *x509.CertPool
}

// repetition starts the runs' servers and forwarders afresh, so that each
// repetition's bounds and counts start empty, and measures.
func (b *egressBench) repetition(cfg config) (rep egressRepetition, err error) {
	runs, err := startEgressRuns(b.bounded, b.dir, "run", cfg.egressRuns, nil)
	defer stopEgressRuns(runs)
	if err != nil {
		return rep, err
	}
	one, err := startEgressRuns(b.single, b.dir, "single", 1, b.terminator)
	defer stopEgressRuns(one)
	if err != nil {
		return rep, err
	}
	perRun := (cfg.egressConns + cfg.egressRuns - 1) / cfg.egressRuns
	rep.concurrentDirect = b.concurrent(direct, runs, perRun)
	rep.concurrent = b.concurrent(viaForwarder, runs, perRun)
	// The paths take turns, so that whatever else loads the machine weighs
	// on each alike.
	credentialed := b.up.credentialed.Load()
	if rep.download, err = b.downloads(one[0], cfg, downloadRounds, 0); err != nil {
		return rep, err
	}
	if cfg.egressLinkMbit > 0 {
		if rep.atLink, err = b.downloads(one[0], cfg, linkRounds, cfg.egressLinkMbit); err != nil {
			return rep, err
		}
		// The paced figures are of a link only if the upstream kept to
		// it: no download faster (a pacing that did not hold), and the
		// direct one near it, which the step prints.
		link := linkMiBPerS(cfg)
		for _, p := range egressPaths {
			if got := rep.atLink.mibPerS(p, cfg); got > 1.01*link {
				return rep, fmt.Errorf("the download %s at %d Mbit/s ran at %.1f MiB/s, over the link's %.1f: the upstream did not pace it", p, cfg.egressLinkMbit, got, link)
			}
		}
	}
	clients := make([]*http.Client, len(egressPaths))
	for _, p := range egressPaths {
		clients[p] = &http.Client{Transport: b.transport(p, one[0], false), Timeout: time.Minute}
	}
	for range cfg.egressRequests {
		for _, p := range egressPaths {
			d, err := firstByte(clients[p], p)
			if err != nil {
				return rep, fmt.Errorf("a small request %s: %w", p, err)
			}
			rep.firstByte[p] = append(rep.firstByte[p], d)
		}
	}
	// Every connection through the proxy must have been counted as allowed:
	// a figure from connections that went around it would measure nothing.
	// (A failed connection at once is reported as such.)
	proxied := int64(len(rep.download.wall[direct]) + len(rep.atLink.wall[direct]) + cfg.egressRequests)
	if allowed, want := one[0].server.Stats().Allowed, int64(len(egressPaths)-1)*proxied; allowed != want {
		return rep, fmt.Errorf("the proxy allowed %d connections, the bench made %d through it", allowed, want)
	}
	// Likewise every request on the credentialed path must have reached the
	// upstream with the credential: ended and sent again by the proxy, not
	// tunnelled.
	if got := b.up.credentialed.Load() - credentialed; got != proxied {
		return rep, fmt.Errorf("the upstream got the credential in %d requests, the bench made %d to %s", got, proxied, credentialedName)
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

// downloads downloads -egress-mib on each path through run, rounds times
// with the paths in turn (so that whatever else loads the machine weighs on
// each alike), the upstream's answer paced at mbit Mbit/s (0: not paced).
func (b *egressBench) downloads(run egressRun, cfg config, rounds, mbit int) (d downloads, err error) {
	size := int64(cfg.egressMiB) << 20
	for range rounds {
		for _, p := range egressPaths {
			wall, cpu, err := download(b.transport(p, run, false), p, size, mbit)
			if err != nil {
				return d, fmt.Errorf("the download %s (paced at %d Mbit/s, 0: not paced): %w", p, mbit, err)
			}
			d.wall[p] = append(d.wall[p], wall)
			d.cpu[p] = append(d.cpu[p], cpu)
		}
	}
	return d, nil
}

// linkMiBPerS is -egress-link-mbit in MiB/s of the answer's body.
func linkMiBPerS(cfg config) float64 { return float64(cfg.egressLinkMbit) * 1e6 / 8 / (1 << 20) }

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
				_, err := get(c, p.url("/small"))
				opened.Done()
				<-all
				if err == nil {
					err = heldGet(c, p.url("/bytes?n="+strconv.Itoa(1<<20)))
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
func heldGet(c *http.Client, url string) error {
	reused := false
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
		GotConn: func(info httptrace.GotConnInfo) { reused = info.Reused },
	})
	if _, err := getContext(ctx, c, url); err != nil {
		return err
	}
	if !reused {
		return errors.New("the connection was not kept open")
	}
	return nil
}

// download fetches size bytes on path p through t, paced at mbit Mbit/s by
// the upstream (0: not paced), and returns how long it took and the CPU
// the process spent meanwhile.
func download(t *http.Transport, p egressPath, size int64, mbit int) (wall, cpu time.Duration, err error) {
	defer t.CloseIdleConnections()
	start, cpu0 := time.Now(), processCPU()
	n, err := get(&http.Client{Transport: t, Timeout: 10 * time.Minute},
		p.url("/bytes?n="+strconv.FormatInt(size, 10)+"&mbit="+strconv.Itoa(mbit)))
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

// firstByte makes a small request on path p and returns the time from the
// start of the request (before its connection) to the first byte of the
// answer.
func firstByte(c *http.Client, p egressPath) (time.Duration, error) {
	var first time.Time
	// The last call is the answer's: with a proxy, the CONNECT's answer
	// comes first.
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
		GotFirstResponseByte: func() { first = time.Now() },
	})
	start := time.Now()
	if _, err := getContext(ctx, c, p.url("/small")); err != nil {
		return 0, err
	}
	return first.Sub(start), nil
}

func get(c *http.Client, url string) (int64, error) {
	return getContext(context.Background(), c, url)
}

// getContext gets url, reads the whole answer and returns its size.
func getContext(ctx context.Context, c *http.Client, url string) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
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
	roots := b.up.roots
	if p == viaCredential {
		roots = b.runRoots
	}
	t := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: roots, NextProtos: []string{"http/1.1"}},
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
	case viaForwarder, viaCredential:
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
// /small answering a few bytes and /bytes?n=N&mbit=M answering N bytes at
// M Mbit/s (0 or none: as fast as it can).
type upstream struct {
	srv   *http.Server
	roots *x509.CertPool
	// credentialed counts the requests that came with the bench's
	// credential.
	credentialed atomic.Int64
}

func startUpstream(addr netip.Addr) (*upstream, error) {
	ca, err := testenv.NewCA("agentrun bench egress CA")
	if err != nil {
		return nil, err
	}
	cert, err := ca.IssueTLS(upstreamName, upstreamName, credentialedName)
	if err != nil {
		return nil, err
	}
	// Port 443: the proxy checks the TLS ClientHello's name on that port
	// only, and the bench measures the path runs take.
	l, err := net.Listen("tcp", netip.AddrPortFrom(addr, 443).String())
	if err != nil {
		return nil, fmt.Errorf("the simulated upstream (-egress-address): %w", err)
	}
	up := &upstream{roots: ca.Pool()}
	up.srv = &http.Server{
		Handler:           http.HandlerFunc(up.serve),
		ReadHeaderTimeout: time.Minute,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}},
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	go func() { _ = up.srv.ServeTLS(l, "", "") }()
	return up, nil
}

// chunk is what /bytes writes, again and again.
var chunk = make([]byte, 256<<10)

func (up *upstream) serve(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") == "Bearer "+benchToken {
		up.credentialed.Add(1)
	}
	switch r.URL.Path {
	case "/small":
		_, _ = io.WriteString(w, "ok\n")
	case "/bytes":
		n, err := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
		if err != nil || n < 0 {
			http.Error(w, "n: a number of bytes", http.StatusBadRequest)
			return
		}
		mbit, err := strconv.Atoi(r.URL.Query().Get("mbit"))
		if err != nil || mbit < 0 {
			mbit = 0
		}
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		link := newLink(mbit)
		for n > 0 {
			piece := chunk[:min(n, link.write)]
			link.wait(len(piece))
			k, err := w.Write(piece)
			if err != nil {
				return
			}
			n -= int64(k)
		}
	default:
		http.NotFound(w, r)
	}
}

// link paces an answer's writes at a link's speed: a token bucket over
// wall time, filled at the link's rate up to linkBurst bytes, which each
// write takes from, waiting while the bucket holds too few. A write that
// waited longer than it had to (a timer's slack, a busy core, a slow
// reader) is made up for by the next ones, up to the bucket's size: a link
// does not send faster after a pause, and its pace stays the rate, not the
// rate less the timers' slack.
type link struct {
	bytesPerS float64 // 0: not paced
	// write is the most a write sends.
	write  int64
	tokens float64
	last   time.Time
}

// linkWrite and linkBurst are a paced answer's writes and its bucket's
// size: 64 KiB, half a millisecond at 1 Gbit/s, and four of them.
const (
	linkWrite = 64 << 10
	linkBurst = 4 * linkWrite
)

func newLink(mbit int) *link {
	if mbit == 0 {
		return &link{write: int64(len(chunk))}
	}
	return &link{bytesPerS: float64(mbit) * 1e6 / 8, write: linkWrite, last: time.Now()}
}

// wait returns when the link may send n bytes.
func (l *link) wait(n int) {
	if l.bytesPerS == 0 {
		return
	}
	now := time.Now()
	l.tokens = min(linkBurst, l.tokens+now.Sub(l.last).Seconds()*l.bytesPerS) - float64(n)
	l.last = now
	if l.tokens < 0 {
		time.Sleep(time.Duration(-l.tokens / l.bytesPerS * float64(time.Second)))
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
// allowed the upstream under both its names and a name of its own, term
// (when not nil) serving the names it holds a credential for.
func startEgressRuns(p *egress.Proxy, dir, prefix string, n int, term egress.Terminator) ([]egressRun, error) {
	var runs []egressRun
	for i := range n {
		name := fmt.Sprintf("%s-%d", prefix, i)
		policy, err := egress.ParsePolicy(upstreamName, credentialedName, name+".bench.test")
		if err != nil {
			return runs, err
		}
		socket := filepath.Join(dir, name+".sock")
		_ = os.Remove(socket) // the previous repetition's
		l, err := net.Listen("unix", socket)
		if err != nil {
			return runs, err
		}
		r := egressRun{socket: socket, server: p.Serve(l, policy, nil, term)}
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

// downloadKind is one of a repetition's downloads, as the figures name it.
type downloadKind struct {
	of func(egressRepetition) downloads
	// key ends its figures' keys, name its table rows' paths.
	key, name string
}

// downloadKinds are the download as fast as the machine goes and, unless
// -egress-link-mbit is 0, the one paced at the link's speed.
func downloadKinds(cfg config) []downloadKind {
	kinds := []downloadKind{{of: func(r egressRepetition) downloads { return r.download }}}
	if cfg.egressLinkMbit > 0 {
		kinds = append(kinds, downloadKind{
			of:   func(r egressRepetition) downloads { return r.atLink },
			key:  "_at_link",
			name: fmt.Sprintf(" at %d Mbit/s", cfg.egressLinkMbit),
		})
	}
	return kinds
}

// egressFigures are the egress step's figures: each proxied one beside the
// direct one of the same repetitions, and their ratio or difference taken
// within each repetition.
func egressFigures(reps []egressRepetition, cfg config) []namedSpread {
	of := func(f func(egressRepetition) float64) spread { return spreadOf(reps, f) }
	p99 := func(p egressPath) spread { return of(func(r egressRepetition) float64 { return r.firstByteMs(p, 99) }) }
	added := func(p egressPath) spread {
		return of(func(r egressRepetition) float64 { return r.firstByteMs(p, 99) - r.firstByteMs(direct, 99) })
	}
	// The proxy's ratio and added time were the step's first figures:
	// their keys name no path.
	suffix := func(p egressPath) string {
		if p == viaProxy {
			return ""
		}
		return "_" + p.key()
	}
	var figures []namedSpread
	each := func(paths []egressPath, key func(egressPath) string, f func(egressPath) spread) {
		for _, p := range paths {
			figures = append(figures, namedSpread{key(p), f(p)})
		}
	}
	proxied := egressPaths[1:]
	for _, k := range downloadKinds(cfg) {
		each(proxied, func(p egressPath) string { return "egress_download_ratio" + suffix(p) + k.key },
			func(p egressPath) spread { return of(func(r egressRepetition) float64 { return k.of(r).ratio(p) }) })
		each(egressPaths, func(p egressPath) string { return "egress_download_" + p.key() + "_mib_per_s" + k.key },
			func(p egressPath) spread {
				return of(func(r egressRepetition) float64 { return k.of(r).mibPerS(p, cfg) })
			})
		each(egressPaths, func(p egressPath) string { return "egress_download_cpu_ms_per_mib_" + p.key() + k.key },
			func(p egressPath) spread {
				return of(func(r egressRepetition) float64 { return k.of(r).cpuMsPerMiB(p, cfg) })
			})
	}
	each(proxied, func(p egressPath) string { return "egress_first_byte_p99_added" + suffix(p) + "_ms" }, added)
	each(egressPaths, func(p egressPath) string { return "egress_first_byte_p99_" + p.key() + "_ms" }, p99)
	return append(figures, []namedSpread{
		{"egress_at_once_refused_other", of(func(r egressRepetition) float64 { return float64(r.concurrent.refusedOther()) })},
		{"egress_at_once_over_limit", of(func(r egressRepetition) float64 { return float64(r.concurrent.overLimit) })},
		{"egress_at_once_direct_failed", of(func(r egressRepetition) float64 { return float64(r.concurrentDirect.failed) })},
	}...)
}

// printEgress prints the egress step's table, by path.
func printEgress(reps []egressRepetition, cfg config) {
	fmt.Printf("\negress: a %d MiB download (%d rounds a repetition, the paths in turn) and %d small requests on new connections, by path, %d repetition(s); median [min, max]\n",
		cfg.egressMiB, downloadRounds, cfg.egressRequests, len(reps))
	if cfg.egressLinkMbit > 0 {
		fmt.Printf("the same download with the upstream's answer paced at %d Mbit/s (%.1f MiB/s), %d rounds a repetition: the rows \"at %d Mbit/s\"\n",
			cfg.egressLinkMbit, linkMiBPerS(cfg), linkRounds, cfg.egressLinkMbit)
	}
	fmt.Printf("%-52s %26s %26s %26s %26s %26s\n", "path", "download MiB/s", "CPU ms a MiB", "first byte p50 ms", "p95 ms", "p99 ms")
	for _, k := range downloadKinds(cfg) {
		for _, p := range egressPaths {
			fmt.Printf("%-52s %26s %26s", p.String()+k.name, spreadOf(reps, func(r egressRepetition) float64 { return k.of(r).mibPerS(p, cfg) }),
				spreadOf(reps, func(r egressRepetition) float64 { return k.of(r).cpuMsPerMiB(p, cfg) }))
			// The small requests are not paced: their figures are on the
			// unpaced rows.
			if k.key == "" {
				for _, pct := range []float64{50, 95, 99} {
					fmt.Printf(" %26s", spreadOf(reps, func(r egressRepetition) float64 { return r.firstByteMs(p, pct) }))
				}
			}
			fmt.Println()
		}
	}
	wall := func(c func(egressRepetition) concurrentResult) spread {
		return spreadOf(reps, func(r egressRepetition) float64 { return ms(c(r).wall) })
	}
	fmt.Printf("%d connections at once from %d runs, each a small request then 1 MiB: %s ms direct, %s ms through the forwarders and the proxy\n",
		cfg.egressConns, cfg.egressRuns,
		wall(func(r egressRepetition) concurrentResult { return r.concurrentDirect }),
		wall(func(r egressRepetition) concurrentResult { return r.concurrent }))
}
