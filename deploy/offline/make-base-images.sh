#!/usr/bin/env bash
# OFFLINE MACHINES ONLY: stand-in base images built from Debian packages.
#
# The Dockerfile and docker-compose.yml name official images (python:3.11-slim, redis:7.0,
# debian:bookworm-slim, prom/prometheus:v2.53.1, grafana/grafana:11.1.0) and are what a user runs
# against a real registry.  On a machine that reaches Debian's package mirror but no image
# registry, this script makes equivalents under the same tags, so `docker build` and
# `docker compose` find them locally and never pull:
#
#   python:3.11-slim        Debian bookworm python3 (3.11) with its headers (as the official
#                           image has: pdqhash compiles against them), pip, venv; `python`/`pip` on PATH
#   redis:7.0               Debian redis-server + redis-tools (7.0), protected mode off as in
#                           the official image
#   debian:bookworm-slim    the debootstrap base itself (the nginx front's image builds on it)
#   prom/prometheus:v2.53.1 Debian prometheus (2.42), run as nobody, data in /prometheus
#
# Grafana has no Debian package: no stand-in is made for grafana/grafana.
# They are stand-ins, not the official images (versions differ as listed); never push them.
# Every image gets the label org.pointer-dm.offline-standin=true; remove them with
#   docker image rm $(docker images -q --filter label=org.pointer-dm.offline-standin=true)
#
# Behind a TLS-intercepting proxy the image build's `pip wheel` must trust the proxy's CA:
# the python stand-in trusts the CAs the host added locally (/usr/local/share/ca-certificates),
# as the host's own pip does; HOST_CAS=0 leaves them out.
#
# Needs root, debootstrap and a running Docker engine.  Idempotent: existing tags are kept
# unless FORCE=1.  Usage: deploy/offline/make-base-images.sh [TAG...]
set -euo pipefail

MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
WORK=${WORK:-/var/tmp/pointer-dm-offline}
LABEL=org.pointer-dm.offline-standin=true

die() { echo "make-base-images: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, chroot)"
command -v debootstrap >/dev/null || die "needs debootstrap (apt-get install debootstrap)"
docker info >/dev/null 2>&1 || die "no Docker engine answers (start dockerd)"

base_rootfs() {
  if [ ! -e "$WORK/base/.complete" ]; then
    rm -rf "$WORK/base"
    mkdir -p "$WORK"
    echo "debootstrap $SUITE (minbase) -> $WORK/base" >&2
    debootstrap --variant=minbase "$SUITE" "$WORK/base" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
      || die "debootstrap failed: see $WORK/debootstrap.log"
    touch "$WORK/base/.complete"
  fi
}

# make_image TAG "PACKAGES" "SHELL SETUP IN THE CHROOT" [--change ...]...
make_image() {
  local tag=$1 packages=$2 setup=$3
  shift 3
  if [ "${FORCE:-0}" != 1 ] && docker image inspect "$tag" >/dev/null 2>&1; then
    echo "$tag: present (FORCE=1 to rebuild)" >&2
    return
  fi
  local dir="$WORK/${tag//[\/:]/_}"
  rm -rf "$dir"
  cp -a "$WORK/base" "$dir"
  rm -f "$dir/.complete"
  cp /etc/resolv.conf "$dir/etc/resolv.conf"
  # No service starts inside the chroot while packages install.
  printf '#!/bin/sh\nexit 101\n' >"$dir/usr/sbin/policy-rc.d"
  chmod +x "$dir/usr/sbin/policy-rc.d"
  if [ "${WITH_HOST_CAS:-0}" = 1 ] && [ "${HOST_CAS:-1}" = 1 ] \
      && compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    mkdir -p "$dir/usr/local/share/ca-certificates"
    cp /usr/local/share/ca-certificates/*.crt "$dir/usr/local/share/ca-certificates/"
  fi
  chroot "$dir" /bin/sh -euc "
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends $packages >/dev/null
    $setup
    apt-get clean
    rm -rf /var/lib/apt/lists/* /usr/sbin/policy-rc.d
  "
  : >"$dir/etc/resolv.conf"
  echo "$tag: importing" >&2
  tar -C "$dir" --numeric-owner -c . | docker import \
    --change "LABEL $LABEL" --change "ENV LANG=C.UTF-8" \
    --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    "$@" - "$tag" >/dev/null
  rm -rf "$dir"
}

ASKED=" $* "
want() { [ "$ASKED" = "  " ] || [[ "$ASKED" == *" $1 "* ]]; }

base_rootfs
if want python:3.11-slim; then
  WITH_HOST_CAS=1 make_image python:3.11-slim "python3 python3-dev python3-pip python3-venv ca-certificates" '
    ln -sf /usr/bin/python3 /usr/local/bin/python
    ln -sf /usr/bin/pip3 /usr/local/bin/pip
    rm -f /usr/lib/python3.*/EXTERNALLY-MANAGED  # the official image pip-installs as root
    update-ca-certificates >/dev/null' \
    --change 'CMD ["python3"]'
fi
if want redis:7.0; then
  # The official image is built with protected mode off by default (it is reached over the
  # container network, never published unasked); Debian's binary keeps it on, so wrap it.
  make_image redis:7.0 "redis-server redis-tools" '
    mkdir -p /data
    printf "#!/bin/sh\nexec /usr/bin/redis-server \"\$@\" --protected-mode no\n" \
      >/usr/local/bin/redis-server
    chmod +x /usr/local/bin/redis-server' \
    --change 'WORKDIR /data' --change 'EXPOSE 6379' --change 'CMD ["redis-server"]'
fi
if want debian:bookworm-slim; then
  # The nginx front's base (deploy/nginx/Dockerfile installs nginx and its Lua module).
  make_image debian:bookworm-slim "" ':' --change 'CMD ["bash"]'
fi
if want prom/prometheus:v2.53.1; then
  make_image prom/prometheus:v2.53.1 "prometheus" '
    mkdir -p /prometheus /etc/prometheus
    chown nobody:nogroup /prometheus' \
    --change 'USER nobody' --change 'WORKDIR /prometheus' --change 'EXPOSE 9090' \
    --change 'ENTRYPOINT ["/usr/bin/prometheus"]' \
    --change 'CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]'
fi
docker images --filter "label=$LABEL"
