#!/usr/bin/env bash
# Prints the Kubernetes identity of Podman hosts: for each host name, the
# ServiceAccount agentrun-host-<name> in agentrun-system (AGENTRUN_NAMESPACE)
# and its bindings to the roles config/default and config/host install (the
# ClusterRoleBinding <namespace>:agentrun-host-<name>).
# Apply the output:
#
#   hack/host-identity.sh podman1 podman2 | kubectl apply -f -
#
# The ValidatingAdmissionPolicies of config/host take the host's name from the
# account's name (the part after agentrun-host-), so each account can only
# write its own host's runs, PodmanHost and Leases: the name given here must
# be the manager's --host-name on that host (a lowercase RFC 1123 subdomain,
# as spec.hostName).
#
#   hack/host-identity.sh [--token-secret] NAME...
#       the YAML; --token-secret adds a Secret holding a token that does not
#       expire (agentrun-host-<name>-token): revoke it by deleting the Secret
#   hack/host-identity.sh --kubeconfig NAME [DURATION]
#       a kubeconfig for the host, on stdout, made with the current kubectl
#       context (which must be allowed to create tokens): the API server and
#       CA of that context and a token for agentrun-host-<name> from
#       `kubectl create token` valid for DURATION (default 8760h; the API
#       server may cap it), or the token of the Secret agentrun-host-<name>-token
#       when that Secret exists
#
# AGENTRUN_NAMESPACE is the namespace of the accounts (default
# agentrun-system, config/default's): an install in another namespace makes
# its hosts' accounts there, and their managers take
# leaseNamespace: <that namespace> in their files. KUBECTL names the kubectl to use
# (default: kubectl).
set -euo pipefail

NAMESPACE=${AGENTRUN_NAMESPACE:-agentrun-system}
KUBECTL=${KUBECTL:-kubectl}

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
  exit 2
}

# check_name refuses what cannot be a host name: the policies compare it with
# spec.hostName, PodmanHost and Lease names, all lowercase RFC 1123
# subdomains. 233 leaves room for the longest name made from it
# (agentrun-host-<name>-token) within 253.
check_name() {
  local re='^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$'
  if [[ ! $1 =~ $re || ${#1} -gt 233 ]]; then
    echo "host-identity: '$1' is not a host name: use a lowercase RFC 1123 subdomain of at most 233 characters, as the manager's --host-name" >&2
    exit 2
  fi
}

identity() {
  local name=$1 sa=agentrun-host-$1
  cat <<EOF
---
# Podman host $name: its manager runs with --host-name=$name and a token of
# this account.
apiVersion: v1
kind: ServiceAccount
metadata:
  name: $sa
  namespace: $NAMESPACE
  labels:
    app.kubernetes.io/name: agentrun
    app.kubernetes.io/component: host
    agents.agentrun.dev/host: $name
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  # Cluster-wide: named with the namespace, so that an installation in
  # another namespace with a host of the same name has a binding of its own.
  name: $NAMESPACE:$sa
  labels:
    app.kubernetes.io/name: agentrun
    app.kubernetes.io/component: host
    agents.agentrun.dev/host: $name
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: agentrun-manager-role
subjects:
  - kind: ServiceAccount
    name: $sa
    namespace: $NAMESPACE
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: $sa
  namespace: $NAMESPACE
  labels:
    app.kubernetes.io/name: agentrun
    app.kubernetes.io/component: host
    agents.agentrun.dev/host: $name
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: agentrun-host-leader-election-role
subjects:
  - kind: ServiceAccount
    name: $sa
    namespace: $NAMESPACE
EOF
  if [[ $token_secret == 1 ]]; then
    cat <<EOF
---
apiVersion: v1
kind: Secret
metadata:
  name: $sa-token
  namespace: $NAMESPACE
  labels:
    app.kubernetes.io/name: agentrun
    app.kubernetes.io/component: host
    agents.agentrun.dev/host: $name
  annotations:
    kubernetes.io/service-account.name: $sa
type: kubernetes.io/service-account-token
EOF
  fi
}

kubeconfig() {
  local name=$1 duration=${2:-8760h} sa=agentrun-host-$1
  local server ca token
  server=$("$KUBECTL" config view --minify -o jsonpath='{.clusters[0].cluster.server}')
  ca=$("$KUBECTL" config view --minify --raw -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')
  if [[ -z $ca ]]; then
    local file
    file=$("$KUBECTL" config view --minify -o jsonpath='{.clusters[0].cluster.certificate-authority}')
    [[ -z $file ]] || ca=$(base64 -w0 <"$file")
  fi
  if "$KUBECTL" -n "$NAMESPACE" get secret "$sa-token" >/dev/null 2>&1; then
    token=$("$KUBECTL" -n "$NAMESPACE" get secret "$sa-token" -o jsonpath='{.data.token}' | base64 -d)
  else
    token=$("$KUBECTL" -n "$NAMESPACE" create token "$sa" --duration="$duration")
  fi
  if [[ -z $token ]]; then
    echo "host-identity: got no token for $NAMESPACE/$sa (is the Secret's token filled in yet?)" >&2
    exit 1
  fi
  cat <<EOF
# kubeconfig of Podman host $name: install as /etc/agentrun/kubeconfig (mode 0600)
apiVersion: v1
kind: Config
clusters:
  - name: agentrun
    cluster:
      server: $server
$([[ -n $ca ]] && printf '      certificate-authority-data: %s\n' "$ca")
users:
  - name: $sa
    user:
      token: $token
contexts:
  - name: agentrun
    context:
      cluster: agentrun
      user: $sa
current-context: agentrun
EOF
}

token_secret=0
case ${1:-} in
  ""|-h|--help) usage ;;
  --kubeconfig)
    [[ $# -ge 2 && $# -le 3 ]] || usage
    check_name "$2"
    kubeconfig "$2" "${3:-}"
    exit 0
    ;;
  --token-secret) token_secret=1; shift ;;
esac
[[ $# -ge 1 ]] || usage
for name in "$@"; do
  check_name "$name"
done
for name in "$@"; do
  identity "$name"
done
