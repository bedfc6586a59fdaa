#!/usr/bin/env bash
# Make sure the images our Dockerfiles and docker-compose.yml name are in local storage:
# pulled from their registry where one is reachable, else built here under the names they
# have in the registries:
#   docker.io/library/debian:bookworm-slim  a debootstrap minbase of Debian 12
#   docker.io/library/python:3.10-slim      that, plus this machine's CPython 3.10
#   docker.io/library/redis:7.0-bookworm    that Debian, plus Debian's redis-server (7.0)
#   docker.io/motoserver/moto:5.0.28        the S3 stand-in (compose/s3-moto.yml), moto from PyPI
#   docker.io/prom/prometheus:v2.42.0       that Debian, plus Debian's Prometheus (2.42)
# Grafana (`--profile metrics`) is in neither Debian nor PyPI: it is not built here.
# An image already in local storage is kept (FORCE=1 fetches or rebuilds it).
# BASE_IMAGES=auto (default) pulls each image and builds only what cannot be pulled;
# BASE_IMAGES=pull refuses to build (a registry must answer); BASE_IMAGES=build never pulls.
# Building needs root, debootstrap and podman (`make base-images` installs them with apt).
set -euo pipefail
cd "$(dirname "$0")"
ENGINE=${CONTAINER_ENGINE:-podman}
PYTHON=${PYTHON:-$(../../scripts/find-python310.sh)}
WORK=${BASE_IMAGES_WORK:-../../var/base-images}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
FORCE=${FORCE:-0}
SOURCE=${BASE_IMAGES:-auto}
case "$SOURCE" in auto|pull|build) ;; *) echo "base-images: BASE_IMAGES=$SOURCE: use auto, pull or build" >&2; exit 2;; esac
ENV_CHANGES=(--change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' --change 'ENV LANG=C.UTF-8')

have() { [ "$FORCE" != 1 ] && "$ENGINE" image exists "$1"; }
say() { echo "base-images: $*" >&2; }

pulled() {  # $1: image name; true once its registry's image is in local storage
  [ "$SOURCE" = build ] && return 1
  if timeout 300 "$ENGINE" pull -q "$1" >/dev/null 2>"$WORK/pull.log"; then
    say "pulled $1"; return 0
  fi
  if [ "$SOURCE" = pull ]; then
    cat "$WORK/pull.log" >&2
    say "cannot pull $1 and BASE_IMAGES=pull: check the registry login and network, or set BASE_IMAGES=auto to build it here"
    exit 1
  fi
  # One refusal is enough: the other images come from the same registry, and a network
  # that drops packets would make each pull wait out its timeout.
  say "cannot pull $1 ($(tail -1 "$WORK/pull.log" | cut -c1-160)): building it, and the rest, here"
  SOURCE=build
  return 1
}

# The libraries CPython's standard modules load (ssl, ctypes, sqlite3, lzma, bz2, readline...).
PY_RUNTIME_DEBS="ca-certificates libssl3 libffi8 libsqlite3-0 libbz2-1.0 liblzma5 libncursesw6 libreadline8 zlib1g libgdbm6 libuuid1 netbase tzdata"

debian_rootfs() {  # $1: target folder; a fresh minbase each time (seconds, and no stale state)
  rm -rf "$1" && mkdir -p "$1"
  debootstrap --variant=minbase bookworm "$1" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
    || { tail -20 "$WORK/debootstrap.log" >&2; say "debootstrap failed: is $MIRROR reachable? (set DEBIAN_MIRROR)"; exit 1; }
}

import_rootfs() {  # $1: folder, $2: image name, then extra --change options
  local root=$1 name=$2; shift 2
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
  tar -C "$root" -cf "$WORK/rootfs.tar" .
  "$ENGINE" import "${ENV_CHANGES[@]}" "$@" "$WORK/rootfs.tar" "$name" >/dev/null
  rm -f "$WORK/rootfs.tar"
  say "built $name ($("$ENGINE" image inspect --format '{{.Size}}' "$name" | numfmt --to=si)B)"
}

mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)

DEBIAN=docker.io/library/debian:bookworm-slim PYTHON_IMAGE=docker.io/library/python:3.10-slim
build_debian=0 build_python=0
have "$DEBIAN" || pulled "$DEBIAN" || build_debian=1
have "$PYTHON_IMAGE" || pulled "$PYTHON_IMAGE" || build_python=1
if [ "$build_debian" = 1 ] || [ "$build_python" = 1 ]; then
  say "debootstrap bookworm (minbase)"
  debian_rootfs "$WORK/rootfs"
  [ "$build_debian" = 1 ] && import_rootfs "$WORK/rootfs" "$DEBIAN" --change 'CMD ["bash"]'
fi
if [ "$build_python" = 1 ]; then
  say "CPython $("$PYTHON" -c 'import platform; print(platform.python_version())') from $PYTHON"
  chroot "$WORK/rootfs" apt-get update -qq
  chroot "$WORK/rootfs" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $PY_RUNTIME_DEBS >/dev/null
  prefix=$("$PYTHON" -c 'import sys; print(sys.prefix)')
  version=$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
  dest="$WORK/rootfs/usr/local"
  mkdir -p "$dest/bin" "$dest/lib" "$dest/include"
  cp -a "$prefix/bin/python$version" "$dest/bin/"
  cp -a "$prefix"/lib/libpython3* "$dest/lib/"
  cp -a "$prefix/include/python$version" "$dest/include/"
  (cd "$prefix/lib" && tar --exclude="python$version/site-packages/*" --exclude="python$version/test" \
      --exclude='__pycache__' -cf - "python$version") | tar -C "$dest/lib" -xf -
  chroot "$WORK/rootfs" ldconfig /usr/local/lib
  ln -sf "python$version" "$dest/bin/python3"; ln -sf python3 "$dest/bin/python"
  chroot "$WORK/rootfs" /usr/local/bin/python3 -m ensurepip --upgrade >/dev/null
  ln -sf pip3 "$dest/bin/pip"
  chroot "$WORK/rootfs" /usr/local/bin/python3 -c 'import ssl, sqlite3, ctypes, lzma, bz2, zlib, readline, uuid'
  import_rootfs "$WORK/rootfs" "$PYTHON_IMAGE" --change 'CMD ["python3"]'
fi
rm -rf "$WORK/rootfs"

build() {  # $1: image name, $2: Dockerfile; apt and pip inside reach the registries through the host's network
  have "$1" && return 0
  pulled "$1" && return 0
  local mounts=()
  [ -f /etc/pip.conf ] && mounts+=(-v /etc/pip.conf:/etc/pip.conf:ro -v /etc/ssl/certs:/etc/ssl/certs:ro)
  "$ENGINE" build -q --network host "${mounts[@]}" -f "$2" -t "$1" . >/dev/null
  say "built $1 ($("$ENGINE" image inspect --format '{{.Size}}' "$1" | numfmt --to=si)B)"
}
build docker.io/library/redis:7.0-bookworm redis.Dockerfile
build docker.io/motoserver/moto:5.0.28 moto.Dockerfile
build docker.io/prom/prometheus:v2.42.0 prometheus.Dockerfile
