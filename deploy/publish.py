"""Publish one model version: its package to the package index, its images to the container registry.

    .venv/bin/python deploy/publish.py --version champion --store store --registry 127.0.0.1:5000 \\
        --base-image oncology-base:bookworm

1. Builds the ``oncology-model`` wheel carrying that version (``oncology wheel``) and uploads it
   with twine to the index at ``$ONCOLOGY_PYPI_URL`` (user and password from
   ``$ONCOLOGY_PYPI_USER``/``$ONCOLOGY_PYPI_PASSWORD``, as ``infra/pypi.sh env`` prints them).
   A published version is immutable: the same content again is a no-op, different content is
   refused.
2. Downloads the images' pinned dependencies as wheels into ``build/wheelhouse/`` (pip, on the
   host), builds the ``oncology`` wheel, and stages one small build context per image under
   ``build/docker/<image>/``.
3. Builds ``REGISTRY/oncology-webservice:VERSION`` and ``REGISTRY/oncology-trainer:VERSION`` with
   BuildKit (the Debian client ``/usr/bin/docker``; ``$DOCKER_HOST``). The index URL with its
   credentials (``$ONCOLOGY_PYPI_INDEX_URL``) reaches the build only as the secret ``pipindex``,
   from a private temporary file.
4. Pushes both and prints ``REFERENCE@DIGEST`` for each, one per line, on stdout.

Progress goes to stderr; build logs to ``build/publish/``. Any error is one line on stderr and a
non-zero exit status.
"""

from __future__ import annotations

import argparse
import base64
import email.parser
import hashlib
import html.parser
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from oncology.project import git_commit

REPO = Path(__file__).resolve().parents[1]
BUILD = REPO / "build"
WHEELHOUSE = BUILD / "wheelhouse"
DOCKER_DIR = REPO / "deploy" / "docker"
IMAGES = ("webservice", "trainer")
MODEL_PROJECT = "oncology-model"
#: what the images run: CPython 3.11 on x86_64 glibc 2.36 (Debian 12, as python:3.11-slim)
PLATFORMS = [f"manylinux_2_{minor}_x86_64" for minor in range(36, 4, -1)] + [
    "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64",
]


class PublishError(Exception):
    """Publishing stopped; the message says what to do."""


def say(message: str) -> None:
    print(f"publish: {message}", file=sys.stderr, flush=True)


# ---- the package index ------------------------------------------------------------------------


@dataclass(frozen=True)
class Index:
    upload_url: str
    simple_url: str = field(repr=False)  # credentials inside
    user: str
    password: str = field(repr=False)

    @classmethod
    def from_env(cls) -> Index:
        names = ("ONCOLOGY_PYPI_URL", "ONCOLOGY_PYPI_INDEX_URL", "ONCOLOGY_PYPI_USER", "ONCOLOGY_PYPI_PASSWORD")
        missing = [n for n in names if not os.environ.get(n)]
        if missing:
            raise PublishError(
                f"{', '.join(missing)} not set: start the package index and load its settings with "
                'infra/pypi.sh up && eval "$(infra/pypi.sh env)"'
            )
        return cls(*(os.environ[n] for n in names))

    def _get(self, url: str) -> bytes | None:
        """The body at ``url`` (None on 404), authenticated."""
        bare = re.sub(r"^(\w+://)[^/@]*@", r"\1", url)  # credentials go in the header, never in a message
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        request = urllib.request.Request(bare, headers={"Authorization": f"Basic {token}"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                body: bytes = response.read()
                return body
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            if exc.code in (401, 403):
                raise PublishError(f"the package index refused the credentials ({exc.code}) at {bare}") from None
            raise PublishError(f"the package index answered {exc.code} for {bare}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise PublishError(f"cannot reach the package index at {bare} ({reason}): is infra/pypi.sh up?") from None

    def published(self, filename: str) -> bytes | None:
        """The bytes of ``filename`` if the index already holds it."""
        page_url = urllib.parse.urljoin(self.simple_url, f"{MODEL_PROJECT}/")
        page = self._get(page_url)
        if page is None:
            return None
        links = _Links()
        links.feed(page.decode("utf-8", "replace"))
        for href in links.hrefs:
            if urllib.parse.unquote(urllib.parse.urlsplit(href).path).rsplit("/", 1)[-1] == filename:
                return self._get(urllib.parse.urljoin(page_url, href.split("#", 1)[0]))
        return None

    def upload(self, wheel: Path) -> None:
        if importlib.util.find_spec("twine") is None:
            raise PublishError(f"twine is not installed in {sys.prefix}: pip install twine (a dev dependency)")
        env = {**os.environ, "TWINE_USERNAME": self.user, "TWINE_PASSWORD": self.password, "TWINE_NON_INTERACTIVE": "1"}
        proc = subprocess.run(
            [sys.executable, "-m", "twine", "upload", "--disable-progress-bar", "--repository-url", self.upload_url, str(wheel)],
            env=env, capture_output=True, text=True,
        )
        if proc.returncode != 0:
            raise PublishError(f"twine upload of {wheel.name} to {self.upload_url} failed: {_last_line(proc.stdout + proc.stderr)}")


class _Links(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.hrefs += [v for k, v in attrs if k == "href" and v]


def wheel_content(data: bytes) -> dict[str, str]:
    """What a wheel carries, for comparing two builds: every file outside ``*.dist-info`` (code and
    model bundle) by sha256, and its declared dependencies.  Build-tool details (RECORD, WHEEL,
    metadata layout) are left out, so a newer build backend alone is not a change."""
    import io

    content: dict[str, str] = {}
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for name in zf.namelist():
            top = name.split("/", 1)[0]
            if top.endswith(".dist-info"):
                if name.endswith("/METADATA"):
                    meta = email.parser.BytesParser().parsebytes(zf.read(name))
                    content["Requires-Dist"] = "\n".join(sorted(meta.get_all("Requires-Dist") or []))
                continue
            content[name] = hashlib.sha256(zf.read(name)).hexdigest()
    return content


def publish_wheel(index: Index, wheel: Path) -> str:
    """Upload ``wheel`` unless the index holds it already; refuse a different one under the same name."""
    existing = index.published(wheel.name)
    if existing is not None:
        if wheel_content(existing) == wheel_content(wheel.read_bytes()):
            return "already on the index with the same content: not uploaded again"
        changed = sorted(set(wheel_content(existing).items()) ^ set(wheel_content(wheel.read_bytes()).items()))
        raise PublishError(
            f"{wheel.name} is already on the package index with different content "
            f"({', '.join(sorted({k for k, _ in changed})[:3])} differ): a published version is immutable, "
            "train and publish a new version instead"
        )
    index.upload(wheel)
    return f"uploaded to {index.upload_url}"


# ---- build contexts ----------------------------------------------------------------------------


def _requirements(path: Path) -> list[tuple[str, str]]:
    """(normalized name, version) of each pin of a requirements file."""
    pins = []
    for line in path.read_text().splitlines():
        if m := re.match(r"^([A-Za-z0-9._-]+)==([^\s;\\]+)", line):
            pins.append((_normalize(m.group(1)), m.group(2)))
    return pins


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def download_wheels(requirement_files: Sequence[Path]) -> None:
    """Every pinned dependency as a wheel for the images' platform, into the shared wheelhouse."""
    WHEELHOUSE.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", "--dest", str(WHEELHOUSE),
           "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311"]
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    for f in requirement_files:
        cmd += ["-r", str(f)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        errors = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("ERROR")]
        raise PublishError(f"downloading the images' dependencies failed: {errors[0] if errors else _last_line(proc.stderr)}")


def _wheels_for(pins: list[tuple[str, str]]) -> list[Path]:
    found: dict[tuple[str, str], Path] = {}
    for wheel in sorted(WHEELHOUSE.glob("*.whl")):
        name, version = wheel.name.split("-")[:2]
        found.setdefault((_normalize(name), version), wheel)
    missing = [f"{n}=={v}" for n, v in pins if (n, v) not in found]
    if missing:
        raise PublishError(f"no wheel in {WHEELHOUSE} for {', '.join(missing)}")
    return [found[pin] for pin in pins]


def build_app_wheel(out: Path) -> Path:
    """The ``oncology`` application wheel (reproducible: same code, same bytes, same cache key)."""
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(REPO)],
        capture_output=True, text=True,
    )
    if proc.returncode != 0:
        raise PublishError(f"building the oncology wheel failed: {_last_line(proc.stdout + proc.stderr)}")
    wheels = sorted(out.glob("oncology-*.whl"))
    if len(wheels) != 1:
        raise PublishError(f"expected one oncology wheel in {out}, found {len(wheels)}")
    return wheels[0]


def stage_context(image: str, app_wheel: Path) -> Path:
    """build/docker/IMAGE/: requirements.txt, wheels/, app/ (the oncology wheel carries the raw data), nothing else."""
    context = BUILD / "docker" / image
    if context.exists():
        shutil.rmtree(context)
    requirements = DOCKER_DIR / image / "requirements.txt"
    (context / "wheels").mkdir(parents=True)
    (context / "app").mkdir()
    _copy(requirements, context / "requirements.txt")
    for wheel in _wheels_for(_requirements(requirements)):
        _copy(wheel, context / "wheels" / wheel.name)
    _copy(app_wheel, context / "app" / app_wheel.name)
    return context


def _copy(src: Path, dst: Path) -> None:
    """A plain 0644 copy: BuildKit keys its cache on content and mode, never on where a file came from."""
    shutil.copyfile(src, dst)
    dst.chmod(0o644)


# ---- images ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Docker:
    client: str

    def check(self) -> None:
        if not os.access(self.client, os.X_OK):
            raise PublishError(f"{self.client} not found: the Debian docker client is needed (apt-get install docker.io)")
        proc = self.run(["version", "--format", "{{.Server.Version}}"])
        if proc.returncode != 0:
            raise PublishError(
                f"the docker engine at {os.environ.get('DOCKER_HOST', 'the default socket')} does not answer: "
                'start it with infra/docker.sh up and eval "$(infra/docker.sh env)"'
            )

    def run(self, args: list[str], log: Path | None = None) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "DOCKER_BUILDKIT": "1"}
        if log is None:
            return subprocess.run([self.client, *args], env=env, capture_output=True, text=True)
        with log.open("w") as out:
            proc = subprocess.run([self.client, *args], env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
        return subprocess.CompletedProcess(proc.args, proc.returncode, log.read_text(), "")


@contextmanager
def secret_file(value: str) -> Iterator[Path]:
    """``value`` in a file only this user can read, outside the build context, deleted afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="oncology-publish-"))
    try:
        path = folder / "pipindex"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(value)
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def build_image(docker: Docker, image: str, context: Path, tag: str, base_image: str, version: str,
                commit: str, secret: Path, logs: Path, no_cache: bool = False) -> float:
    log = logs / f"{image}-build.log"
    t0 = time.monotonic()
    proc = docker.run([
        "build", "--progress=plain", "--network=host", *(["--no-cache"] if no_cache else []),
        "-f", str(DOCKER_DIR / image / "Dockerfile"),
        "--build-arg", f"BASE_IMAGE={base_image}",
        "--build-arg", f"MODEL_VERSION={version}",
        "--build-arg", f"GIT_COMMIT={commit}",
        "--secret", f"id=pipindex,src={secret}",
        "-t", tag, str(context),
    ], log=log)
    if proc.returncode != 0:
        raise PublishError(f"building {tag} failed: {_build_error(proc.stdout)} (full log: {log})")
    return time.monotonic() - t0


def push_image(docker: Docker, tag: str, logs: Path) -> str:
    """Push ``tag``; its digest in the registry."""
    log = logs / f"{tag.rsplit('/', 1)[-1].replace(':', '-')}-push.log"
    proc = docker.run(["push", tag], log=log)
    if proc.returncode != 0:
        raise PublishError(f"pushing {tag} failed: {_last_line(proc.stdout)} (full log: {log})")
    m = re.search(r"digest: (sha256:[0-9a-f]{64})", proc.stdout)
    if not m:
        raise PublishError(f"pushing {tag}: no digest in docker's output (log: {log})")
    return m.group(1)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def _one_line(message: str) -> str:
    """The first line of ``message``; the rest, if any, goes to a log file named in that line."""
    first, _, rest = message.strip().partition("\n")
    if not rest.strip():
        return first
    log = BUILD / "publish" / "logs" / "error.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(message + "\n")
    return f"{first.rstrip(':')} (details: {log})"


def _build_error(log: str) -> str:
    """The line of a BuildKit log that says what failed."""
    for line in reversed(log.splitlines()):
        if "ERROR" in line or line.startswith("error:") or "failed to solve" in line:
            return re.sub(r"^#\d+ [\d.]+ ", "", line.strip())
    return _last_line(log)


# ---- the whole run ------------------------------------------------------------------------------


def publish(version: str, store: str, registry: str, base_image: str, images: Sequence[str], push: bool,
            docker_client: str, no_cache: bool = False) -> list[str]:
    from oncology.packaging import build_model_wheel
    from oncology_model.registry import ModelRegistry
    from oncology_model.storage import open_store

    index = Index.from_env()
    docker = Docker(docker_client)
    docker.check()
    resolved = ModelRegistry(open_store(store)).resolve(version)
    say(f"model version {resolved}" + (f" ({version})" if version != resolved else "") + f" from {store}")

    work = BUILD / "publish"
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    dist = work / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    wheel = build_model_wheel(store, resolved, dist)
    say(f"{wheel.name}: {publish_wheel(index, wheel)}")

    download_wheels([DOCKER_DIR / image / "requirements.txt" for image in images])
    app_wheel = build_app_wheel(dist)
    commit = git_commit()
    if commit.endswith("-dirty"):
        say(f"warning: the work tree has uncommitted changes; the images record revision {commit}")
    references = []
    with secret_file(index.simple_url) as secret:
        for image in images:
            context = stage_context(image, app_wheel)
            tag = f"{registry}/oncology-{image}:{resolved}"
            seconds = build_image(docker, image, context, tag, base_image, resolved, commit, secret, logs, no_cache)
            size = docker.run(["image", "inspect", "--format", "{{.Size}}", tag]).stdout.strip()
            say(f"built {tag} in {seconds:.1f}s ({int(size) / 1e6:.0f} MB)" if size.isdigit() else f"built {tag}")
            if push:
                references.append(f"{tag}@{push_image(docker, tag, logs)}")
                say(f"pushed {references[-1]}")
            else:
                references.append(tag)
    return references


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--version", default="champion", help="model version, or champion/latest (default: champion)")
    parser.add_argument("--store", default=os.environ.get("ONCOLOGY_STORE", "store"), help="model store (default: $ONCOLOGY_STORE or ./store)")
    parser.add_argument("--registry", default=os.environ.get("ONCOLOGY_REGISTRY"),
                        help="container registry host:port (default: $ONCOLOGY_REGISTRY)")
    parser.add_argument("--base-image", default=os.environ.get("ONCOLOGY_BASE_IMAGE", "python:3.11-slim"),
                        help="image both images build on (default: $ONCOLOGY_BASE_IMAGE or python:3.11-slim)")
    parser.add_argument("--image", action="append", choices=IMAGES, help="build only this image (repeatable; default: both)")
    parser.add_argument("--no-push", action="store_true", help="build and tag, but push nothing")
    parser.add_argument("--no-cache", action="store_true",
                        help="build every layer again (BuildKit keys a layer by the version, not by the index: "
                             "use it to install oncology-model from another index than the cached layer did)")
    parser.add_argument("--docker", default="/usr/bin/docker", help="docker client with BuildKit (default: /usr/bin/docker)")
    args = parser.parse_args(argv)
    if not args.registry:
        parser.error("--registry is required (or set ONCOLOGY_REGISTRY, as infra/up.sh prints it)")

    from oncology_model.errors import OncologyError

    try:
        references = publish(args.version, args.store, args.registry, args.base_image, args.image or list(IMAGES),
                             not args.no_push, args.docker, args.no_cache)
    except (PublishError, OncologyError) as exc:
        print(f"publish: error: {_one_line(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("publish: interrupted", file=sys.stderr)
        return 130
    for reference in references:
        print(reference)
    return 0


if __name__ == "__main__":
    sys.exit(main())
