#!/usr/bin/env bash
# Network namespaces joined to the machine by a veth pair, the way the local
# fleet's hosts (hack/local-stack.sh) and the tests' simulated internet
# (internal/testing/internet) have them. Root only.
#
#   hack/netns.sh add NS       the namespace NS (/var/run/netns/NS) with its
#                              loopback up; fails when NS exists, so that
#                              callers running at once can claim a name
#   hack/netns.sh link NS VETH HOST_CIDR NS_CIDR
#                              a veth pair: VETH on the machine with
#                              HOST_CIDR, eth0 in NS with NS_CIDR, both up;
#                              NS's default route goes to HOST_CIDR's
#                              address, so NS answers whatever the machine
#                              sends or forwards to it
#   hack/netns.sh del NS VETH  the pair, then the namespace; what is already
#                              gone is no error
#
# Run commands inside a namespace with nsenter --net=/var/run/netns/NS, not
# ip netns exec, which remounts /sys and loses the cgroup mounts runc needs.
set -euo pipefail

usage() {
  echo "usage: hack/netns.sh add NS | link NS VETH HOST_CIDR NS_CIDR | del NS VETH" >&2
  exit 2
}

case ${1:-} in
add)
  (($# == 2)) || usage
  ip netns add "$2"
  ip -n "$2" link set lo up
  ;;
link)
  (($# == 5)) || usage
  ns=$2 veth=$3 host_cidr=$4 ns_cidr=$5
  ip link add "$veth" type veth peer name eth0 netns "$ns"
  ip addr add "$host_cidr" dev "$veth"
  ip -n "$ns" addr add "$ns_cidr" dev eth0
  ip link set "$veth" up
  ip -n "$ns" link set eth0 up
  ip -n "$ns" route add default via "${host_cidr%/*}"
  ;;
del)
  (($# == 3)) || usage
  # The pair first: deleting one end deletes both at once, while a deleted
  # namespace takes its eth0 (and the pair) away only when the kernel gets
  # round to it, and not while a process or socket still holds it.
  ip link del "$3" 2>/dev/null || true
  ip netns del "$2" 2>/dev/null || true
  ;;
*)
  usage
  ;;
esac
