#!/usr/bin/env bash
# Builds the Claude Code agent image localhost/agentrun-claude:<version> with no
# image registry: the root filesystem comes from Debian's packages
# (debootstrap), Claude Code's native binary from the npm registry, and the
# result is imported into Podman.
#
# Cached: when the image already carries this version and this script's hash
# (label agentrun.agent-image), nothing is done. Downloaded packages are kept
# under ~/.cache/agentrun/agent-image/ so a rebuild does not fetch them again.
# A cold build takes a minute or more. Each step prints one line on stderr; the
# output of apt, debootstrap, npm and podman goes to
# ~/.cache/agentrun/logs/agent-image.log. The last line, on stdout, gives the
# image, its size and the time taken.
#
#   hack/agent-image.sh                build (or reuse) the image
#   hack/agent-image.sh --print-image  print the image's name and exit
#
#   CLAUDE_CODE_VERSION  the @anthropic-ai/claude-code version (default: the
#                        Version constant in internal/agentimage, the one place
#                        it is pinned)
#   AGENTRUN_AGENT_IMAGE the image name (default localhost/agentrun-claude:VERSION)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=hack/lib.sh
source "$ROOT/hack/lib.sh"
# The manager's default image and the agent suite use the same constant, so
# the script reads it rather than repeating it; internal/agentimage's test
# checks that this reading gives the Go constant's image.
pinned=$(sed -n 's/^const Version = "\([^"]*\)"$/\1/p' "$ROOT/internal/agentimage/agentimage.go")
if [[ -z $pinned ]]; then
  echo "agent-image: found no 'const Version = \"...\"' line in internal/agentimage/agentimage.go" >&2
  exit 1
fi
VERSION=${CLAUDE_CODE_VERSION:-$pinned}
IMAGE=${AGENTRUN_AGENT_IMAGE:-localhost/agentrun-claude:$VERSION}
SUITE=bookworm
CACHE=$AGENTRUN_CACHE/agent-image

if [[ ${1:-} == --print-image ]]; then
  echo "$IMAGE"
  exit 0
fi

log_setup agent-image

if [[ $(id -u) != 0 ]]; then
  step "must run as root: debootstrap and the rootful Podman need it"
  exit 1
fi
if ! command -v podman >/dev/null; then
  step "podman is missing: run hack/podman-setup.sh (or make podman) first"
  exit 1
fi

# The image is rebuilt when the version or this script changes.
key="$VERSION-$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-16)"
old_id=$(podman image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
if [[ -n $old_id && $(podman image inspect --format '{{index .Labels "agentrun.agent-image"}}' "$IMAGE") == "$key" ]]; then
  echo "$IMAGE: up to date ($(podman images --format '{{.Size}}' "$IMAGE"))"
  exit 0
fi

step "building $IMAGE (a minute or two on a cold machine; the steps follow)"
missing=()
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v npm >/dev/null || missing+=(npm)
if ((${#missing[@]})); then
  step "installing ${missing[*]} from Debian (under a minute)"
  export DEBIAN_FRONTEND=noninteractive
  logged apt-get update -q
  logged apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# apt_mirror prints the first http(s) Debian mirror this machine's apt sources
# use for $SUITE, in either the one-line or the deb822 format.
apt_mirror() {
  local files=() f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [[ -f $f ]] && files+=("$f")
  done
  ((${#files[@]})) || return 0
  awk -v suite="$SUITE" '
    function flush() {
      if (!found && deb && ok && uri ~ /^https?:\/\//) { print uri; found = 1 }
      deb = ok = 0; uri = ""
    }
    FNR == 1 || NF == 0 { flush() }
    /^Types:/ { for (i = 2; i <= NF; i++) if ($i == "deb") deb = 1 }
    /^URIs:/ { uri = $2 }
    /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == suite) ok = 1 }
    /^deb[ \t]/ {
      line = $0; sub(/\[[^]]*\]/, "", line); split(line, f)
      if (f[3] == suite) { deb = ok = 1; uri = f[2]; flush() }
    }
    END { flush() }
  ' "${files[@]}"
}
mirror=$(apt_mirror)
if [[ -z $mirror ]]; then
  mirror=http://deb.debian.org/debian
  step "no $SUITE mirror in /etc/apt/sources.list*: using $mirror"
fi

work=$(mktemp -d /var/tmp/agentrun-agent-image.XXXXXX)
at_exit 'rm -rf "$work"'
rootfs=$work/rootfs
mkdir -p "$CACHE/debs" "$CACHE/npm"

# The tools an agent reaches the network with besides the CLI: git (over
# HTTPS: a proxied run has no route for SSH), curl and gh. Each honours the
# HTTPS_PROXY/HTTP_PROXY/NO_PROXY variables a proxied run gets, which
# test/agent's egress spec checks through the host's proxy. (Not npm: Debian's
# needs Node.js and some 250 packages that debootstrap fails to configure.)
step "debootstrap --variant=minbase $SUITE from $mirror (one to two minutes; less with the packages cached)"
logged debootstrap --variant=minbase --include=git,ca-certificates,curl,gh --cache-dir="$CACHE/debs" \
  "$SUITE" "$rootfs" "$mirror"
logged chroot "$rootfs" useradd --create-home --home-dir /home/agent --uid 1000 --user-group --shell /bin/bash agent
install -d -o 1000 -g 1000 "$rootfs/workspace"
# What a container never needs: package lists and caches, documentation.
rm -rf "$rootfs"/var/cache/apt/* "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/{doc,man,info}/*

step "npm install @anthropic-ai/claude-code@$VERSION (about 30 seconds)"
# --ignore-scripts: the postinstall wants a newer Node than Debian's; the
# native binary comes in the platform package anyway.
logged npm install --prefix "$work/npm" --cache "$CACHE/npm" --ignore-scripts --no-audit --no-fund --loglevel=error \
  "@anthropic-ai/claude-code@$VERSION"
binary=$work/npm/node_modules/@anthropic-ai/claude-code-linux-x64/claude
if [[ ! -x $binary ]]; then
  step "npm brought no native Linux x86-64 binary ($binary)"
  exit 1
fi
# The native binary runs without Node.js; it is not stripped on purpose (the
# JavaScript bundle is appended to the executable).
install -m 0755 "$binary" "$rootfs/usr/local/bin/claude"

step "importing into Podman and checking claude --version (about 20 seconds)"
import_image() {
  # The version is pinned by the tag, so the CLI must not update itself.
  tar --numeric-owner -C "$rootfs" -c . | podman import --quiet \
    --change 'USER agent' --change 'WORKDIR /workspace' \
    --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin' --change 'ENV HOME=/home/agent' \
    --change 'ENV DISABLE_AUTOUPDATER=1' \
    --change "LABEL agentrun.agent-image=$key" --change "LABEL org.opencontainers.image.version=$VERSION" \
    - "$IMAGE"
}
logged import_image

got=$(podman run --rm --network=none "$IMAGE" claude --version)
if [[ $got != "$VERSION "* ]]; then
  step "claude --version in $IMAGE printed '$got', not $VERSION"
  exit 1
fi
new_id=$(podman image inspect --format '{{.Id}}' "$IMAGE")
if [[ -n $old_id && $old_id != "$new_id" ]]; then
  podman rmi "$old_id" >/dev/null 2>&1 || step "the previous image $old_id is still in use: not removed"
fi
echo "$IMAGE: built in ${SECONDS}s ($(podman images --format '{{.Size}}' "$IMAGE")); claude --version: $got"
