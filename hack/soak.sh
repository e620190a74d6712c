#!/usr/bin/env bash
# make soak: no leaks over thousands of runs. On make bench's stack of its
# own (hack/bench.sh starts it and tears it down), SOAK_RUNS (5000) short runs
# through one host, BENCH_C (8) at a time: the host is a --mode=host manager
# the soak starts from the stack's configuration, as a real host runs (the
# stack's manager serves the webhook and the fleet side). Each run's fake
# agent prints a line, works SOAK_RUN_SECONDS (2) and answers, with its live
# output refreshed every SOAK_PROGRESS_PERIOD (1s), a signed completion callback to a receiver
# in the bench's process (the host allows 127.0.0.1/32 for it) and a TTL of 0.
# At every SOAK_EVERY (1000) runs it waits for them all to be called back and
# deleted and prints the host manager's resident memory, heap in use after a
# collection, goroutines and open files, and the containers, secrets and
# session directories left; last, one line of key=value (growth from the
# first reading to the last), also in .local/soak.json. It fails when a goal
# is missed: goroutines and open files flat (growth at most 5), resident
# memory within 10 MiB, nothing left behind, every run succeeded and called
# back. It uses Podman: run it alone. SOAK_IDLE (0: none) reads the host once
# more after that long without runs; SOAK_MEMPROFILERATE sets the host's
# runtime.MemProfileRate for fine heap profiles (each reading's profile is
# kept in .local/soak-heap).
set -euo pipefail
BENCH_ONLY_SOAK=1 exec "$(dirname "$0")/bench.sh"
