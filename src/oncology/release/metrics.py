"""Each arm's requests, errors and scoring times over a window, from the replicas' metrics.

Every replica counts, by model version and arm, the requests it scored (``oncology_arm_requests_total``,
``outcome`` ok or error) and the model's scoring time (the histogram ``oncology_arm_scoring_seconds``).
The counters are cumulative, so a window is a difference of two readings:

- `PrometheusSource`: a Prometheus that scrapes the replicas; its HTTP API gives each series' value at
  the window's end and at its start (a series absent at the start began inside the window: from 0), and
  a series that was reset in between (a replica restarted) counts its ``increase()`` instead;
- `PodsSource`: each pod of the service, listed by label and scraped through the Kubernetes API
  server's pod proxy (``/api/v1/namespaces/NS/pods/NAME:PORT/proxy/metrics``), with a kubeconfig or,
  inside the cluster, the pod's service-account token;
- `ReplicasSource`: a list of replica URLs (a local run), each scraped at ``URL/metrics``.

The last two read the replicas now; the window's start is an earlier reading kept in the store beside
the plan (`BASELINE_KEY`): the judge's first pass of a step records it and holds, the later passes of
the step subtract it, replica by replica (a replica absent from it, or whose counters went down since,
started inside the window: all its counts are the window's).

Standard library only (the judge's image needs no Kubernetes or Prometheus client).
"""

from __future__ import annotations

import base64
import json
import logging
import math
import os
import re
import ssl
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Protocol

from oncology_model.errors import NotFoundError, OncologyError
from oncology_model.storage import Store

REQUESTS: Final = "oncology_arm_requests_total"
BUCKETS: Final = "oncology_arm_scoring_seconds_bucket"
#: The reading a step's window starts from (pods and replicas sources), beside the registry's alias document.
BASELINE_KEY: Final = "registry/release-metrics.json"
#: In a pod: the service account's token, CA and namespace (Kubernetes mounts them there).
SERVICE_ACCOUNT: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TIMEOUT: Final = 10.0
log = logging.getLogger(__name__)

#: One series: the metric's name and its labels, sorted.
Series = tuple[str, tuple[tuple[str, str], ...]]


class MetricsError(OncologyError):
    """The replicas' metrics could not be read (the message names where and why)."""


@dataclass
class ArmMetrics:
    """One arm (a version in an arm) over a window: requests, errors and the scoring-time histogram."""

    requests: float = 0.0
    errors: float = 0.0
    #: upper bound (seconds, ``inf`` last) -> requests scored within it (cumulative, as Prometheus keeps them)
    buckets: dict[float, float] = field(default_factory=dict)

    def cumulative(self) -> list[tuple[float, float]]:
        return sorted(self.buckets.items())


@dataclass
class Reading:
    """What a source read for a window: each (version, arm)'s figures, and where they came from."""

    arms: dict[tuple[str, str], ArmMetrics]
    source: str
    since: str
    until: str
    replicas: list[str] = field(default_factory=list)
    unreachable: dict[str, str] = field(default_factory=dict)
    #: the replicas' readings now (sources that read them), to start the next step's window from
    raw: dict[str, dict[Series, float]] | None = None

    def arm(self, version: str, arm: str) -> ArmMetrics:
        return self.arms.get((version, arm), ArmMetrics())

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "from": self.since, "to": self.until, "replicas": len(self.replicas),
                **({"unreachable": self.unreachable} if self.unreachable else {})}


def _fold(values: Iterable[tuple[Series, float]], versions: set[str]) -> dict[tuple[str, str], ArmMetrics]:
    """Series values (already differences over the window) summed into arms."""
    arms: dict[tuple[str, str], ArmMetrics] = {}
    for (name, label_items), value in values:
        labels = dict(label_items)
        version, arm = labels.get("version"), labels.get("arm")
        if version not in versions or arm is None:
            continue
        figures = arms.setdefault((version, arm), ArmMetrics())
        if name == REQUESTS:
            figures.requests += value
            if labels.get("outcome") == "error":
                figures.errors += value
        elif name == BUCKETS and "le" in labels:
            bound = float(labels["le"])  # "+Inf" -> inf
            figures.buckets[bound] = figures.buckets.get(bound, 0.0) + value
    return arms


# ------------------------------------------------------------------ the text format of /metrics

_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?$')
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')


def parse(text: str, names: Iterable[str] = (REQUESTS, BUCKETS)) -> dict[Series, float]:
    """The samples of ``names`` in a Prometheus text exposition; `MetricsError` on a line it cannot read."""
    wanted = set(names)
    samples: dict[Series, float] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.startswith(tuple(wanted)):
            continue
        match = _LINE.match(line.strip())
        if match is None or match.group(1) not in wanted:
            if match is None:
                raise MetricsError(f"line {number} of the metrics is not a sample: {line[:120]!r}")
            continue
        labels = []
        body = match.group(2) or ""
        position = 0
        while position < len(body):
            label = _LABEL.match(body, position)
            if label is None:
                raise MetricsError(f"line {number} of the metrics has malformed labels: {line[:120]!r}")
            value = label.group(2).replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")
            labels.append((label.group(1), value))
            position = label.end()
        try:
            samples[(match.group(1), tuple(sorted(labels)))] = float(match.group(3))
        except ValueError:
            raise MetricsError(f"line {number} of the metrics has no number: {line[:120]!r}") from None
    return samples


def difference(now: Mapping[str, Mapping[Series, float]], before: Mapping[str, Mapping[Series, float]]
               ) -> list[tuple[Series, float]]:
    """Each replica's counts since ``before``; a replica absent from it, or whose counters went down (a restart),
    counts all it has now."""
    values: list[tuple[Series, float]] = []
    for replica, samples in now.items():
        base = before.get(replica, {})
        if any(value < base.get(series, 0.0) for series, value in samples.items()):
            base = {}  # restarted inside the window: its counters began again at 0
        values += [(series, value - base.get(series, 0.0)) for series, value in samples.items()]
    return values


# ------------------------------------------------------------------ HTTP


def _get(url: str, context: ssl.SSLContext | None = None, headers: Mapping[str, str] | None = None,
         what: str = "") -> bytes:
    request = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT, context=context) as response:
            data: bytes = response.read()
            return data
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:300].decode("utf-8", "replace").strip()
        raise MetricsError(f"{what or url}: HTTP {exc.code} {detail}") from None
    except (OSError, ValueError) as exc:  # URLError, timeouts, TLS failures, a malformed URL
        raise MetricsError(f"{what or url}: {getattr(exc, 'reason', None) or exc}") from None


class Source(Protocol):
    """Where the judge reads the arms' counters."""

    def describe(self) -> str: ...

    def read(self, store: Store, release: str, step: int, versions: set[str], since: datetime,
             until: datetime) -> Reading | None:
        """The arms over ``[since, until)`` (`Reading`), or None when this pass only recorded the window's start."""
        ...

    def remember(self, store: Store, release: str, step: int, at: datetime, raw: Mapping[str, Mapping[Series, float]]
                 ) -> None:
        """Keep ``raw`` (read at ``at``) as the start of ``step``'s window (sources that need one)."""
        ...


# ------------------------------------------------------------------ Prometheus


class PrometheusSource:
    """A Prometheus server's HTTP API (``/api/v1/query``)."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def describe(self) -> str:
        return f"prometheus {self.url}"

    def remember(self, store: Store, release: str, step: int, at: datetime, raw: Mapping[str, Mapping[Series, float]]
                 ) -> None:
        """Nothing: Prometheus keeps the counters' history."""

    def query(self, expr: str, at: datetime) -> list[tuple[Series, float]]:
        """An instant query's vector at ``at``: (series, value) pairs (the metric name from ``__name__``)."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr, "time": f"{at.timestamp():.3f}"})
        try:
            answer = json.loads(_get(url, what=f"prometheus {self.url} (ONCOLOGY_RELEASE_PROMETHEUS_URL)"))
        except ValueError:
            raise MetricsError(f"prometheus {self.url} did not answer JSON for {expr!r}") from None
        if answer.get("status") != "success":
            raise MetricsError(f"prometheus {self.url}: {answer.get('errorType')}: {answer.get('error')} ({expr!r})")
        data = answer["data"]
        if data.get("resultType") != "vector":
            raise MetricsError(f"prometheus {self.url}: {expr!r} gave a {data.get('resultType')}, not a vector")
        out = []
        for item in data["result"]:
            labels = dict(item["metric"])
            name = labels.pop("__name__", "")
            out.append(((name, tuple(sorted(labels.items()))), float(item["value"][1])))
        return out

    def read(self, store: Store, release: str, step: int, versions: set[str], since: datetime,
             until: datetime) -> Reading:
        selector = "{version=~" + json.dumps("|".join(re.escape(v) for v in sorted(versions))) + "}"  # JSON: a PromQL string
        seconds = max(1, math.ceil((until - since).total_seconds()))
        values: list[tuple[Series, float]] = []
        for name in (REQUESTS, BUCKETS):
            end = dict(self.query(f"{name}{selector}", until))
            start = dict(self.query(f"{name}{selector}", since))
            reset = {s for s, v in self.query(f"resets({name}{selector}[{seconds}s]) > 0", until)}
            increase = dict(self.query(f"increase({name}{selector}[{seconds}s])", until)) if reset else {}
            for series, value in end.items():
                unnamed = ("", series[1])  # as functions (resets, increase) name their series
                if unnamed in reset:  # a replica restarted inside the window: Prometheus's increase() of the series
                    values.append((series, increase.get(unnamed, 0.0)))
                else:  # absent at the window's start: the series began inside it, from 0
                    values.append((series, value - start.get(series, 0.0)))
        instances = sorted({dict(s[1]).get("instance", "") for s, _ in values} - {""})
        return Reading(_fold(values, versions), self.describe(), since.isoformat(timespec="seconds"),
                       until.isoformat(timespec="seconds"), instances)


# ------------------------------------------------------------------ replicas read now, against a stored baseline


class _ScrapingSource:
    """A source that reads every replica now; the window's start is the baseline kept in the store."""

    def describe(self) -> str:
        raise NotImplementedError

    def scrape(self) -> tuple[dict[str, str], dict[str, str]]:
        """Each replica's exposition by name, and the replicas that could not be read (name -> why)."""
        raise NotImplementedError

    def read(self, store: Store, release: str, step: int, versions: set[str], since: datetime,
             until: datetime) -> Reading | None:
        texts, unreachable = self.scrape()
        if not texts:
            raise MetricsError(f"{self.describe()}: no replica could be read"
                               + (f" ({'; '.join(f'{k}: {v}' for k, v in unreachable.items())})" if unreachable else ""))
        now = {}
        for name, text in texts.items():
            try:
                now[name] = parse(text)
            except MetricsError as exc:
                unreachable[name] = str(exc)
        baseline = load_baseline(store)
        if baseline is None or baseline.get("release") != release or baseline.get("step") != step:
            record_baseline(store, release, step, until, now)
            return None
        before = {replica: {_series(k): v for k, v in samples} for replica, samples in baseline["replicas"].items()}
        return Reading(_fold(difference(now, before), versions), self.describe(), str(baseline["at"]),
                       until.isoformat(timespec="seconds"), sorted(now), unreachable, now)

    def remember(self, store: Store, release: str, step: int, at: datetime, raw: Mapping[str, Mapping[Series, float]]
                 ) -> None:
        record_baseline(store, release, step, at, raw)


def _series(encoded: list[Any]) -> Series:
    name, labels = encoded
    return str(name), tuple((str(k), str(v)) for k, v in labels)


def load_baseline(store: Store) -> dict[str, Any] | None:
    """The reading the current step's window starts from, if any (one that is not JSON is replaced).  A store
    that cannot be read raises (`StoreError`): the pass fails rather than restart the window."""
    try:
        value = json.loads(store.read(BASELINE_KEY))
    except NotFoundError:
        return None
    except ValueError:
        log.warning("%s is not a reading: a new one is recorded", BASELINE_KEY)
        return None
    return value if isinstance(value, dict) and isinstance(value.get("replicas"), dict) else None


def record_baseline(store: Store, release: str, step: int, at: datetime, replicas: Mapping[str, Mapping[Series, float]]
                    ) -> None:
    body = {"release": release, "step": step, "at": at.isoformat(timespec="seconds"),
            "replicas": {name: [[list(series), value] for series, value in sorted(samples.items())]
                         for name, samples in replicas.items()}}
    store.write(BASELINE_KEY, json.dumps(body, separators=(",", ":")).encode())


class ReplicasSource(_ScrapingSource):
    """Replicas by URL, each scraped at ``URL/metrics`` (a local run: several ``oncology serve``)."""

    def __init__(self, urls: Iterable[str]) -> None:
        self.urls = [u.strip().rstrip("/") for u in urls if u.strip()]
        if not self.urls:
            raise MetricsError("ONCOLOGY_RELEASE_REPLICA_URLS names no replica (comma-separated URLs)")

    def describe(self) -> str:
        return f"replicas {', '.join(self.urls)}"

    def scrape(self) -> tuple[dict[str, str], dict[str, str]]:
        return _all(self.urls, lambda url: _get(f"{url}/metrics", what=f"replica {url}").decode())


def _all(names: list[str], read: Any) -> tuple[dict[str, str], dict[str, str]]:
    texts: dict[str, str] = {}
    failed: dict[str, str] = {}

    def one(name: str) -> None:
        try:
            texts[name] = read(name)
        except MetricsError as exc:
            failed[name] = str(exc)

    with ThreadPoolExecutor(min(8, max(1, len(names)))) as pool:
        list(pool.map(one, names))
    return texts, failed


# ------------------------------------------------------------------ Kubernetes: pods through the API server


@dataclass
class KubeAccess:
    """How to reach the API server: its URL, a bearer token or a client certificate, and the TLS trust."""

    server: str
    namespace: str
    token: str | None = None
    context: ssl.SSLContext | None = None
    where: str = ""

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


def in_cluster(root: Path = SERVICE_ACCOUNT, env: Mapping[str, str] | None = None) -> KubeAccess | None:
    """The pod's own service account (token, CA, namespace), when running inside a cluster."""
    env = os.environ if env is None else env
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT", "443")
    if not host or not (root / "token").is_file():
        return None
    context = ssl.create_default_context(cafile=str(root / "ca.crt")) if (root / "ca.crt").is_file() else None
    namespace = (root / "namespace").read_text().strip() if (root / "namespace").is_file() else "default"
    host = f"[{host}]" if ":" in host else host
    return KubeAccess(f"https://{host}:{port}", namespace, (root / "token").read_text().strip(), context,
                      f"the service account in {root}")


def from_kubeconfig(path: Path) -> KubeAccess:
    """The current context of a kubeconfig: server, namespace, token or client certificate, CA.  Exec and
    auth-provider plugins are not supported (`MetricsError` says so)."""
    try:
        import yaml  # type: ignore[import-untyped]  # the trainer image has PyYAML (through Dask); in a pod: no kubeconfig
    except ImportError:
        raise MetricsError(f"reading the kubeconfig {path} needs PyYAML (pip install pyyaml)") from None

    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise MetricsError(f"kubeconfig {path}: {exc}") from None
    if not isinstance(config, dict):
        raise MetricsError(f"kubeconfig {path} is not a kubeconfig")

    def named(kind: str, name: str | None) -> dict[str, Any]:
        for item in config.get(kind) or []:
            if isinstance(item, dict) and item.get("name") == name:
                value = item.get(kind[:-1]) or {}
                return value if isinstance(value, dict) else {}
        raise MetricsError(f"kubeconfig {path}: no {kind[:-1]} {name!r}")

    context = named("contexts", config.get("current-context"))
    cluster, user = named("clusters", context.get("cluster")), named("users", context.get("user"))
    if "exec" in user or "auth-provider" in user:
        raise MetricsError(f"kubeconfig {path}: user {context.get('user')!r} needs a credential plugin (exec or "
                           "auth-provider), which the judge does not run; give it a token or a client certificate")
    server = str(cluster.get("server") or "")
    if not server:
        raise MetricsError(f"kubeconfig {path}: cluster {context.get('cluster')!r} has no server")
    base = path.parent

    def material(key: str) -> tuple[str | None, bytes | None]:
        if (data := cluster.get(f"{key}-data") or user.get(f"{key}-data")) is not None:
            return None, base64.b64decode(data)
        if (file := cluster.get(key) or user.get(key)) is not None:
            return str(base / file), None
        return None, None

    tls: ssl.SSLContext | None = None
    if server.startswith("https:"):
        if cluster.get("insecure-skip-tls-verify"):
            tls = ssl.create_default_context()
            tls.check_hostname = False
            tls.verify_mode = ssl.CERT_NONE
        else:
            ca_file, ca_data = material("certificate-authority")
            tls = ssl.create_default_context(cafile=ca_file, cadata=ca_data.decode() if ca_data else None)
        cert_file, cert_data = material("client-certificate")
        key_file, key_data = material("client-key")
        if cert_file or cert_data:
            with tempfile.TemporaryDirectory() as folder:  # ssl loads a certificate only from files
                if cert_data is not None:
                    cert_file = os.path.join(folder, "cert.pem")
                    Path(cert_file).write_bytes(cert_data)
                if key_data is not None:
                    key_file = os.path.join(folder, "key.pem")
                    Path(key_file).write_bytes(key_data)
                assert cert_file is not None
                tls.load_cert_chain(cert_file, key_file)
    token = user.get("token")
    if token is None and user.get("tokenFile"):
        token = (base / str(user["tokenFile"])).read_text().strip()
    return KubeAccess(server.rstrip("/"), str(context.get("namespace") or "default"), token, tls, f"kubeconfig {path}")


def kube_access(kubeconfig: str | None = None) -> KubeAccess:
    """In a pod, its service account; elsewhere ``kubeconfig`` (or ``$KUBECONFIG``, else ``~/.kube/config``)."""
    if kubeconfig is None and (inside := in_cluster()) is not None:
        return inside
    path = Path(kubeconfig or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or Path.home() / ".kube" / "config")
    if not path.is_file():
        raise MetricsError(f"no kubeconfig at {path} and not inside a cluster (no service-account token): "
                           "set KUBECONFIG or run the judge in the cluster")
    return from_kubeconfig(path)


class PodsSource(_ScrapingSource):
    """The service's pods, listed by label selector and scraped through the API server's pod proxy."""

    def __init__(self, access: KubeAccess, selector: str, port: int, namespace: str | None = None) -> None:
        self.access = access
        self.selector = selector
        self.port = port
        self.namespace = namespace or access.namespace

    def describe(self) -> str:
        return f"pods {self.selector} in {self.namespace} through {self.access.server}"

    def _get(self, path: str) -> bytes:
        return _get(f"{self.access.server}{path}", self.access.context, self.access.headers,
                    what=f"{self.access.server}{path.split('?')[0]}")

    def pods(self) -> list[str]:
        """The running pods the selector matches."""
        ns = urllib.parse.quote(self.namespace, safe="")
        query = urllib.parse.urlencode({"labelSelector": self.selector})
        try:
            listing = json.loads(self._get(f"/api/v1/namespaces/{ns}/pods?{query}"))
            items = listing["items"]
        except (ValueError, KeyError, TypeError):
            raise MetricsError(f"{self.access.server}: the pod list of {self.namespace} is not a PodList") from None
        return sorted(p["metadata"]["name"] for p in items
                      if (p.get("status") or {}).get("phase") == "Running" and not p["metadata"].get("deletionTimestamp"))

    def scrape(self) -> tuple[dict[str, str], dict[str, str]]:
        names = self.pods()
        if not names:
            raise MetricsError(f"no running pod matches {self.selector!r} in namespace {self.namespace}")
        ns = urllib.parse.quote(self.namespace, safe="")
        return _all(names, lambda pod: self._get(
            f"/api/v1/namespaces/{ns}/pods/{urllib.parse.quote(pod, safe='')}:{self.port}/proxy/metrics").decode())


def source(kind: str, *, prometheus_url: str, replica_urls: str | None, pods_selector: str, pods_port: int,
           pods_namespace: str | None, kubeconfig: str | None = None) -> Source | None:
    """The source a setting names (None: the prediction log alone)."""
    if kind == "log":
        return None
    if kind == "prometheus":
        return PrometheusSource(prometheus_url)
    if kind == "replicas":
        return ReplicasSource((replica_urls or "").split(","))
    if kind == "pods":
        return PodsSource(kube_access(kubeconfig), pods_selector, pods_port, pods_namespace)
    raise MetricsError(f"unknown metrics source {kind!r} (log, prometheus, pods, replicas)")
