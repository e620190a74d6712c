// Command fetch is the test image's HTTPS client (busybox's wget neither
// verifies certificates nor sends https:// through a proxy): it prints the
// body of each URL it is given. It goes through HTTPS_PROXY/HTTP_PROXY and
// trusts SSL_CERT_FILE when they are set, as curl, git and Node do, so a run
// of the test image exercises its egress proxy and the CA bundle its host
// mounts the way a real agent's tools do.
//
//	fetch [-H 'Name: value']... URL...
//
// Exit status 1 when a request fails or answers 400 or more (the body is
// printed still), 2 on a usage error.
package main

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

// headers are the -H flags, "Name: value" each.
type headers []string

func (h *headers) String() string     { return strings.Join(*h, ", ") }
func (h *headers) Set(v string) error { *h = append(*h, v); return nil }

func main() {
	var extra headers
	flag.Var(&extra, "H", "a request header, `Name: value` (repeatable)")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: fetch [-H 'Name: value']... URL...")
		os.Exit(2)
	}
	client := &http.Client{Timeout: time.Minute}
	status := 0
	for _, url := range flag.Args() {
		if err := get(client, url, extra); err != nil {
			fmt.Fprintf(os.Stderr, "fetch: %v\n", err)
			status = 1
		}
	}
	os.Exit(status)
}

// get prints url's body, and fails when it cannot or the answer is an error.
func get(client *http.Client, url string, extra headers) error {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	for _, h := range extra {
		name, value, ok := strings.Cut(h, ":")
		if !ok {
			return fmt.Errorf("header %q is not Name: value", h)
		}
		req.Header.Add(strings.TrimSpace(name), strings.TrimSpace(value))
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(os.Stdout, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode >= 400 {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return nil
}
