"""Stand-ins for the three registry images the deployment names, made from Debian packages.

No container registry is reachable here, so ``debian:12-slim``, ``redis:alpine`` and
``gcr.io/distroless/python3-debian12`` are built locally and tagged with those names: the
Dockerfile, build.sh and run.sh then run exactly as a user runs them.

- ``debian:12-slim``: ``debootstrap --variant=minbase bookworm`` from the mirror the host's apt
  uses, with the host's apt sources; it carries the host's CA bundle and a ``/etc/pip.conf``
  that trusts it (HTTPS here goes through a re-signing proxy), never the project's Dockerfile.
- ``gcr.io/distroless/python3-debian12``: distroless's package list unpacked with
  ``dpkg-deb -x``, ``root``/``nobody``/``nonroot`` (65532) users and no shell.
- ``redis:alpine``: Debian's redis-server on the debian:12-slim stand-in, protected mode off and
  ``/data`` owned by the ``redis`` user, as in the official image.

The three images are saved once (``docker save``) under a cache directory outside the
repository, keyed by everything they are made from, so later runs only ``docker load`` them.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

SUITE = "bookworm"
DEBIAN_SLIM = "debian:12-slim"
DISTROLESS = "gcr.io/distroless/python3-debian12"
REDIS = "redis:alpine"
IMAGES = (DEBIAN_SLIM, DISTROLESS, REDIS)
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# distroless's python3-debian12 package set (its BUILD files), for Debian 12's Python 3.11.
DISTROLESS_PACKAGES = [
    "base-files",
    "netbase",
    "tzdata",
    "ca-certificates",
    "media-types",
    "libc6",
    "gcc-12-base",
    "libgcc-s1",
    "libstdc++6",
    "libssl3",
    "libffi8",
    "zlib1g",
    "libexpat1",
    "liblzma5",
    "libbz2-1.0",
    "libsqlite3-0",
    "libuuid1",
    "libncursesw6",
    "libtinfo6",
    "libreadline8",
    "readline-common",
    "libcrypt1",
    "libnsl2",
    "libtirpc3",
    "libtirpc-common",
    "libgssapi-krb5-2",
    "libkrb5-3",
    "libk5crypto3",
    "libkrb5support0",
    "libcom-err2",
    "libkeyutils1",
    "libdb5.3",
    "libgdbm6",
    "libpython3.11-minimal",
    "libpython3.11-stdlib",
    "python3.11-minimal",
]
DISTROLESS_PASSWD = (
    "root:x:0:0:root:/root:/sbin/nologin\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"
    "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
)
DISTROLESS_GROUP = "root:x:0:\nnobody:x:65534:\ntty:x:5:\nstaff:x:50:\nnonroot:x:65532:\n"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Official redis images run without protected mode; keep a config file given first in place.
REDIS_WRAPPER = """#!/bin/sh
if [ "${1#-}" = "$1" ] && [ -n "$1" ]; then conf=$1; shift; set -- "$conf" --protected-mode no "$@"
else set -- --protected-mode no "$@"; fi
exec /usr/bin/redis-server "$@"
"""
REDIS_DOCKERFILE = f"""FROM {DEBIAN_SLIM}
RUN apt-get update && apt-get install -y --no-install-recommends redis-server \\
    && rm -rf /var/lib/apt/lists/* && mkdir /data && chown redis:redis /data
COPY redis-server /usr/local/bin/redis-server
WORKDIR /data
VOLUME /data
USER redis
EXPOSE 6379
CMD ["redis-server"]
"""

Runner = Callable[..., subprocess.CompletedProcess]


def apt_sources() -> list[Path]:
    """The host's enabled apt source files (the mirror this machine is configured with)."""
    base = Path("/etc/apt")
    files = [base / "sources.list", *sorted((base / "sources.list.d").glob("*.sources"))]
    files += sorted((base / "sources.list.d").glob("*.list"))
    return [f for f in files if f.is_file() and f.read_text().strip()]


def debian_mirror() -> str:
    """The first Debian archive URI of the host's apt configuration."""
    for source in apt_sources():
        text = source.read_text()
        for uri in re.findall(r"^URIs:\s*(\S+)", text, re.M) + re.findall(
            r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+" + SUITE + r"\s", text, re.M
        ):
            if uri.rstrip("/").endswith("/debian"):
                return uri
    return "http://deb.debian.org/debian"


def debian_source_text() -> str:
    """Apt sources for the stand-ins: the host's Debian entries (main archive and security)."""
    lines = []
    for source in apt_sources():
        text = source.read_text()
        for stanza in re.split(r"\n\s*\n", text):
            uris = re.findall(r"^URIs:\s*(\S+)", stanza, re.M)
            if uris and all("debian" in u and "debian.org" in u for u in uris):
                lines.append(stanza.strip() + "\n")
    return "\n".join(lines)


def cache_key() -> str:
    """Hash of everything the images are made from: this file, the apt sources, the CA bundle."""
    digest = hashlib.sha256(Path(__file__).read_bytes())
    digest.update(debian_mirror().encode() + debian_source_text().encode())
    if HOST_CA_BUNDLE.exists():
        digest.update(HOST_CA_BUNDLE.read_bytes())
    return digest.hexdigest()[:16]


def cache_dir() -> Path:
    """Outside the repository: $STANDIN_IMAGE_CACHE, else $XDG_CACHE_HOME, else ~/.cache."""
    explicit = os.environ.get("STANDIN_IMAGE_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "flask-jwt-redis" / "standin-images"


def _tar_rootfs(rootfs: Path, target: Path, run: Runner) -> None:
    run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(target), "."])


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def build_debian_slim(work: Path, run: Runner, docker: Runner) -> None:
    rootfs = work / "debian"
    run(["debootstrap", "--variant=minbase", SUITE, str(rootfs), debian_mirror()])
    sources = debian_source_text()
    if sources:
        (rootfs / "etc/apt/sources.list").unlink(missing_ok=True)
        _write(rootfs / "etc/apt/sources.list.d/debian.sources", sources)
    if HOST_CA_BUNDLE.exists():
        _write(rootfs / "etc/ssl/host-ca-bundle.crt", HOST_CA_BUNDLE.read_text())
        _write(rootfs / "etc/pip.conf", "[global]\ncert = /etc/ssl/host-ca-bundle.crt\n")
    for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for item in (rootfs / leftover).glob("*"):
            if item.is_file():
                item.unlink()
    _tar_rootfs(rootfs, work / "debian.tar", run)
    docker(
        [
            "import",
            "--change",
            f"ENV {PATH_ENV}",
            "--change",
            'CMD ["bash"]',
            str(work / "debian.tar"),
            DEBIAN_SLIM,
        ]
    )


def build_distroless(work: Path, run: Runner, docker: Runner) -> None:
    debs = work / "debs"
    debs.mkdir()
    run(["apt-get", "download", *DISTROLESS_PACKAGES], cwd=debs)
    rootfs = work / "distroless"
    rootfs.mkdir()
    for deb in sorted(debs.glob("*.deb")):
        run(["dpkg-deb", "-x", str(deb), str(rootfs)])
    for unwanted in ("bin/sh", "bin/bash", "usr/bin/sh", "usr/share/doc", "usr/share/man"):
        path = rootfs / unwanted
        if path.is_symlink() or path.is_file():
            path.unlink()
    certificates = sorted((rootfs / "usr/share/ca-certificates").rglob("*.crt"))
    _write(
        rootfs / "etc/ssl/certs/ca-certificates.crt",
        "".join(cert.read_text() for cert in certificates),
    )
    _write(rootfs / "etc/passwd", DISTROLESS_PASSWD)
    _write(rootfs / "etc/group", DISTROLESS_GROUP)
    for directory, mode in (("tmp", 0o1777), ("home/nonroot", 0o700), ("root", 0o700)):
        (rootfs / directory).mkdir(parents=True, exist_ok=True)
        (rootfs / directory).chmod(mode)
    os.chown(rootfs / "home/nonroot", 65532, 65532)
    python3 = rootfs / "usr/bin/python3"
    if not python3.exists():
        python3.symlink_to("python3.11")
    _tar_rootfs(rootfs, work / "distroless.tar", run)
    docker(
        [
            "import",
            "--change", f"ENV {PATH_ENV}",
            "--change", "ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
            "--change", 'ENTRYPOINT ["/usr/bin/python3.11"]',
            str(work / "distroless.tar"), DISTROLESS,
        ]
    )  # fmt: skip


def build_redis(work: Path, docker: Runner) -> None:
    context = work / "redis"
    _write(context / "Dockerfile", REDIS_DOCKERFILE)
    _write(context / "redis-server", REDIS_WRAPPER, 0o755)
    docker(["build", "--network", "host", "-t", REDIS, str(context)])


def ensure_standin_images(run: Runner, docker: Runner) -> tuple[str, float]:
    """Load the stand-ins from the cache, or build and cache them; ("loaded"/"built", seconds)."""
    started = time.monotonic()
    archive = cache_dir() / f"standins-{cache_key()}.tar"
    if archive.is_file():
        docker(["load", "-q", "-i", str(archive)])
        return "loaded from " + str(archive), time.monotonic() - started
    with tempfile.TemporaryDirectory(prefix="standins-") as tmp:
        work = Path(tmp)
        build_debian_slim(work, run, docker)
        build_distroless(work, run, docker)
        build_redis(work, docker)
    archive.parent.mkdir(parents=True, exist_ok=True)
    for stale in archive.parent.glob("standins-*.tar"):
        stale.unlink(missing_ok=True)  # made from other inputs
    partial = archive.with_name(f"{archive.name}.{os.getpid()}.partial")  # runs may overlap
    docker(["save", "-o", str(partial), *IMAGES])
    partial.replace(archive)
    return "built and cached in " + str(archive), time.monotonic() - started
