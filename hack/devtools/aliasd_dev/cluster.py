"""A real Kubernetes control plane on loopback: etcd, kube-apiserver and CoreDNS.

envtest-style: the binaries run as plain processes, no containers and no root.
CoreDNS reads a Corefile that a background thread keeps in sync with the
``kube-system/coredns`` ConfigMap, the way kubelet syncs a ConfigMap volume;
the optional ``kube-system/coredns-custom`` ConfigMap is synced into
``custom/`` next to it, where AKS- and k3s-shaped Corefiles import it.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from aliasd_dev.corefile import CorefilePorts, kubeadm_corefile

log = logging.getLogger(__name__)

REPO_HACK = Path(__file__).resolve().parents[2] / "local-cluster"
SERVICE_CIDR = "10.96.0.0/12"
ADMIN_TOKEN_USER = "aliasd-admin"


class ClusterError(Exception):
    """The local control plane could not be built, started or used."""


def _ephemeral_range() -> tuple[int, int]:
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


_PICK = random.SystemRandom()  # not the seeded global RNG: concurrent suites must differ
_HANDED_OUT: set[int] = set()


def _bindable(port: int, kind: socket.SocketKind) -> bool:
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_udp_tcp_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1, for a process that must be
    given its port before it starts (etcd, kube-apiserver, CoreDNS, a
    ``--forward-to`` target).

    Chosen at random below the kernel's ephemeral range: a port from ``bind(0)``
    is an ephemeral one, which any ``connect()`` or client socket on the machine
    may be handed between this check and the real bind; these never are. Never
    the same port twice in one process. Where the process can bind port 0 and
    report its port (aliasd), prefer that."""
    lo, hi = 10000, _ephemeral_range()[0] - 1
    for _ in range(200):
        port = _PICK.randint(lo, hi)
        if port in _HANDED_OUT:
            continue
        if _bindable(port, socket.SOCK_STREAM) and _bindable(port, socket.SOCK_DGRAM):
            _HANDED_OUT.add(port)
            return port
    raise ClusterError(f"no free UDP+TCP port in {lo}-{hi} on 127.0.0.1")


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (see :func:`free_udp_tcp_port`)."""
    return free_udp_tcp_port()


def ensure_binaries() -> Path:
    """Directory holding kube-apiserver, etcd, coredns, kubectl, kustomize and
    helm; builds them if missing.

    ``ALIASD_BIN_DIR`` points at prebuilt binaries and skips the build.
    """
    preset = os.environ.get("ALIASD_BIN_DIR")
    if preset:
        d = Path(preset)
        missing = [b for b in ("kube-apiserver", "etcd", "coredns", "kubectl", "kustomize",
                               "helm") if not (d / b).is_file()]
        if missing:
            raise ClusterError(f"ALIASD_BIN_DIR={d} lacks {', '.join(missing)}")
        return d
    script = REPO_HACK / "build.sh"
    if not script.is_file():
        raise ClusterError(
            f"{script} not found: run from an aliasd source checkout or set ALIASD_BIN_DIR"
        )
    proc = subprocess.run(
        ["bash", str(script)], stdout=subprocess.PIPE, stderr=None, text=True, check=False
    )
    if proc.returncode != 0:
        raise ClusterError(f"building the local control plane failed (exit {proc.returncode})")
    return Path(proc.stdout.strip().splitlines()[-1])


def _openssl(*args: str, cwd: Path) -> None:
    if shutil.which("openssl") is None:
        raise ClusterError("openssl not found: apt-get install openssl")
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certs(d: Path) -> None:
    """A CA, a serving cert for 127.0.0.1/localhost and the service-account key pair."""
    d.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
             "-out", "ca.crt", "-days", "30", "-subj", "/CN=aliasd-devcluster-ca", cwd=d)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "apiserver.key",
             "-out", "apiserver.csr", "-subj", "/CN=kube-apiserver", cwd=d)
    (d / "san.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
    )
    _openssl("x509", "-req", "-in", "apiserver.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "apiserver.crt", "-days", "30",
             "-extfile", "san.ext", cwd=d)
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=d)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=d)


@dataclass
class _Proc:
    name: str
    argv: list[str]
    logfile: Path
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        out = self.logfile.open("ab")
        self.popen = subprocess.Popen(
            self.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        out.close()

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        p = self.popen
        if p is None:
            return
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        self.popen = None

    def tail(self, n: int = 15) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


@dataclass
class LocalCluster:
    """etcd + kube-apiserver + CoreDNS on free loopback ports.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    bin_dir: Path
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="aliasd-cluster-")))
    etcd_port: int = field(default_factory=free_port)
    etcd_peer_port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    dns_port: int = field(default_factory=free_udp_tcp_port)
    upstream_port: int = field(default_factory=free_udp_tcp_port)
    token: str = field(default_factory=lambda: os.urandom(16).hex())

    def __post_init__(self) -> None:
        self.certs = self.workdir / "certs"
        self.kubeconfig = self.workdir / "kubeconfig"
        self.corefile = self.workdir / "coredns" / "Corefile"
        # etcd's data lives on tmpfs: fast, and never outlives the machine.
        shm = Path("/dev/shm")
        base = shm if shm.is_dir() and os.access(shm, os.W_OK) else self.workdir
        self.etcd_data = Path(tempfile.mkdtemp(prefix="aliasd-etcd-", dir=base))
        self.coredns_ports = CorefilePorts(
            dns=self.dns_port, health=free_port(), ready=free_port(), metrics=free_port(),
            upstream=self.upstream_port,
        )
        self._procs: dict[str, _Proc] = {}
        self._syncs: list[_ConfigMapSync] = []
        self._ssl = ssl.create_default_context()

    # ---- lifecycle -------------------------------------------------------

    @property
    def api_url(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def coredns_addr(self) -> tuple[str, int]:
        return ("127.0.0.1", self.dns_port)

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        t0 = time.monotonic()
        try:
            make_certs(self.certs)
            self._ssl = ssl.create_default_context(cafile=str(self.certs / "ca.crt"))
            (self.certs / "tokens.csv").write_text(
                f'{self.token},{ADMIN_TOKEN_USER},{ADMIN_TOKEN_USER},"system:masters"\n'
            )
            self._start_etcd()
            self.start_apiserver()
            self._write_kubeconfig()
            self.install_serviceentry_crd()
            self._create_coredns_configmap()
            self._start_coredns()
        except BaseException:
            self.stop()
            raise
        log.info("local control plane ready in %.1fs", time.monotonic() - t0)

    def stop(self) -> None:
        for sync in self._syncs:
            sync.stop()
        self._syncs = []
        for name in ("coredns", "kube-apiserver", "etcd"):
            proc = self._procs.pop(name, None)
            if proc is not None:
                proc.stop()
        shutil.rmtree(self.etcd_data, ignore_errors=True)
        if not os.environ.get("ALIASD_KEEP_CLUSTER_DIR"):
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _spawn(self, name: str, argv: list[str]) -> _Proc:
        proc = _Proc(name, argv, self.workdir / f"{name}.log")
        proc.start()
        self._procs[name] = proc
        return proc

    def _wait(self, name: str, check: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        proc = self._procs[name]
        last = ""
        while time.monotonic() < deadline:
            if not proc.alive():
                raise ClusterError(f"{name} exited early:\n{proc.tail()}")
            try:
                if check():
                    return
            except (OSError, http.client.HTTPException, ClusterError) as e:
                last = str(e)
            time.sleep(0.1)
        raise ClusterError(f"{name} not ready after {timeout:.0f}s ({last}):\n{proc.tail()}")

    def _start_etcd(self) -> None:
        client = f"http://127.0.0.1:{self.etcd_port}"
        peer = f"http://127.0.0.1:{self.etcd_peer_port}"
        self._spawn("etcd", [
            str(self.bin_dir / "etcd"), "--name=default", f"--data-dir={self.etcd_data}",
            f"--listen-client-urls={client}", f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=default={peer}", "--unsafe-no-fsync",
            "--log-level=warn",
        ])

        def healthy() -> bool:
            with urllib.request.urlopen(f"{client}/health", timeout=1) as r:
                return bool(json.load(r).get("health") == "true")

        self._wait("etcd", healthy, 30)

    def start_apiserver(self) -> None:
        """Start (or restart) kube-apiserver against the running etcd."""
        c = self.certs
        self._spawn("kube-apiserver", [
            str(self.bin_dir / "kube-apiserver"),
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
            f"--secure-port={self.api_port}",
            f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
            f"--tls-cert-file={c / 'apiserver.crt'}",
            f"--tls-private-key-file={c / 'apiserver.key'}",
            f"--cert-dir={c}",
            f"--token-auth-file={c / 'tokens.csv'}",
            f"--client-ca-file={c / 'ca.crt'}",
            f"--service-account-key-file={c / 'sa.pub'}",
            f"--service-account-signing-key-file={c / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=RBAC",
            "--disable-admission-plugins=ServiceAccount",
            "--allow-privileged=true",
            "--endpoint-reconciler-type=none",
            "--v=1",
        ])
        self._wait("kube-apiserver", lambda: self.request("GET", "/readyz") == "ok", 90)

    def stop_apiserver(self) -> None:
        proc = self._procs.pop("kube-apiserver", None)
        if proc is not None:
            proc.stop()

    def _write_kubeconfig(self) -> None:
        self.write_kubeconfig(self.kubeconfig, user=ADMIN_TOKEN_USER, token=self.token)

    def write_kubeconfig(self, path: Path, *, user: str, token: str) -> Path:
        """A kubeconfig for this API server that authenticates with ``token``
        (e.g. a ServiceAccount token from the TokenRequest API)."""
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "local", "cluster": {
                "server": self.api_url,
                "certificate-authority": str(self.certs / "ca.crt"),
            }}],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": user}}],
            "current-context": "local",
        }
        path.write_text(yaml.safe_dump(cfg))
        return path

    # ---- REST ------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None, *,
                content_type: str = "application/json", timeout: float = 10,
                headers: dict[str, str] | None = None) -> Any:
        """One admin request to the API server; JSON in and out (text for /readyz).
        ``headers`` add to them (``Impersonate-User``: a request as someone else)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.api_url + path, data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Content-Type": content_type,
            "Accept": "application/json", **(headers or {}),
        })
        try:
            with urllib.request.urlopen(req, context=self._ssl, timeout=timeout) as r:
                raw = r.read().decode()
        except urllib.error.HTTPError as e:
            raise ClusterError(f"{method} {path}: HTTP {e.code}: {e.read().decode()[:300]}") from e
        try:
            return json.loads(raw)
        except ValueError:
            return raw

    def apply(self, obj: dict[str, Any], *, dry_run: bool = False) -> Any:
        """Server-side apply of one object (field manager ``aliasd-devcluster``);
        ``dry_run`` runs every admission and validation step but stores nothing."""
        path = resource_path(obj)
        name = obj["metadata"]["name"]
        dry = "&dryRun=All" if dry_run else ""
        return self.request(
            "PATCH", f"{path}/{name}?fieldManager=aliasd-devcluster&force=true{dry}", obj,
            content_type="application/apply-patch+yaml",
        )

    def install_serviceentry_crd(self) -> None:
        crd = yaml.safe_load((Path(__file__).parent / "serviceentry-crd.yaml").read_text())
        self.apply(crd)
        path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd['metadata']['name']}"

        def established() -> bool:
            conds = (self.request("GET", path).get("status") or {}).get("conditions") or []
            ok = any(c["type"] == "Established" and c["status"] == "True" for c in conds)
            if not ok:
                return False
            # Established is set before discovery serves it; wait for the REST path.
            for v in ("v1", "v1beta1", "v1alpha3"):
                self.request("GET", f"/apis/networking.istio.io/{v}/serviceentries")
            return True

        self._wait("kube-apiserver", established, 30)

    def uninstall_serviceentry_crd(self) -> None:
        self.request(
            "DELETE",
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
            "serviceentries.networking.istio.io",
        )

        def gone() -> bool:
            try:
                self.request("GET", "/apis/networking.istio.io/v1/serviceentries")
            except ClusterError as e:
                return "HTTP 404" in str(e)
            return False

        self._wait("kube-apiserver", gone, 30)

    def install_crd(self, crd: dict[str, Any]) -> None:
        """Apply a CustomResourceDefinition and wait until its resource is served."""
        self.apply(crd)
        spec = crd["spec"]
        path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd['metadata']['name']}"

        def served() -> bool:
            conds = (self.request("GET", path).get("status") or {}).get("conditions") or []
            if not any(c["type"] == "Established" and c["status"] == "True" for c in conds):
                return False
            for v in spec["versions"]:  # Established comes before the REST path
                self.request("GET", f"/apis/{spec['group']}/{v['name']}/{spec['names']['plural']}")
            return True

        self._wait("kube-apiserver", served, 30)

    def uninstall_crd(self, name: str) -> None:
        """Delete a CustomResourceDefinition and wait until it is no longer served."""
        crd = self.request("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
        self.request("DELETE", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
        spec = crd["spec"]

        def gone() -> bool:
            try:
                self.request("GET", f"/apis/{spec['group']}/{spec['versions'][0]['name']}/"
                             f"{spec['names']['plural']}")
            except ClusterError as e:
                return "HTTP 404" in str(e)
            return False

        self._wait("kube-apiserver", gone, 30)

    def compact_etcd(self) -> int:
        """Compact etcd at its current revision (forces 410 Gone on old watches)."""
        base = f"http://127.0.0.1:{self.etcd_port}/v3"
        req = urllib.request.Request(f"{base}/kv/range", data=json.dumps({"key": "AA=="}).encode())
        with urllib.request.urlopen(req, timeout=5) as r:
            rev = int(json.load(r)["header"]["revision"])
        req = urllib.request.Request(
            f"{base}/kv/compaction", data=json.dumps({"revision": rev, "physical": True}).encode()
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            r.read()
        return rev

    # ---- CoreDNS -----------------------------------------------------------

    def _create_coredns_configmap(self) -> None:
        corefile = kubeadm_corefile(ports=self.coredns_ports, kubeconfig=str(self.kubeconfig))
        cm = {
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "coredns", "namespace": "kube-system"},
            "data": {"Corefile": corefile},
        }
        with contextlib.suppress(ClusterError):  # kube-system appears on its own, a bit later
            self.request("POST", "/api/v1/namespaces", {
                "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-system"}})
        self.request("POST", "/api/v1/namespaces/kube-system/configmaps", cm)
        self.initial_corefile = corefile

    def _start_coredns(self) -> None:
        self._syncs = [_ConfigMapSync(self, "coredns", self.corefile.parent),
                       _ConfigMapSync(self, "coredns-custom", self.corefile.parent / "custom",
                                      optional=True)]
        for sync in self._syncs:
            sync.start()
        for sync in self._syncs:
            sync.wait_first(10)
        self._spawn("coredns", [
            str(self.bin_dir / "coredns"), "-conf", str(self.corefile),
        ])

        def ready() -> bool:
            url = f"http://127.0.0.1:{self.coredns_ports.ready}/ready"
            with urllib.request.urlopen(url, timeout=1) as r:
                return bool(r.status == 200)

        self._wait("coredns", ready, 30)

    def materialised_keys(self, configmap: str) -> list[str]:
        """The keys of ``kube-system/<configmap>`` (``coredns`` or
        ``coredns-custom``) that are files for CoreDNS now."""
        return self._sync(configmap).keys()

    def hold_configmap(self, configmap: str) -> contextlib.AbstractContextManager[None]:
        """While the block runs, CoreDNS's files keep the ConfigMap as it was;
        then its latest state is materialised at once (a kubelet sync)."""
        return self._sync(configmap).hold()

    def coredns_idle(self) -> bool:
        """Whether CoreDNS has finished its start and every reload it began.
        Its ``reload`` plugin takes the hash it compares against only then,
        re-reading the imported files: one that changed after the configuration
        read it is taken for loaded until the next change (coredns/coredns#6243).
        So a test waits for this before it changes an imported file again."""
        lines = self.logs("coredns", 1_000_000).splitlines()
        started = lines.count("[INFO] Reloading")
        ended = lines.count("[INFO] Reloading complete") + sum(
            ln.startswith(("[ERROR] Restart failed", "[PANIC] Restart")) for ln in lines)
        hashed = any(ln.startswith("[INFO] plugin/reload: Running configuration SHA512")
                     for ln in lines)
        return hashed and started == ended

    def _sync(self, configmap: str) -> _ConfigMapSync:
        for sync in self._syncs:
            if sync.name == configmap:
                return sync
        raise ClusterError(f"no ConfigMap sync for kube-system/{configmap}")

    def logs(self, name: str, n: int = 40) -> str:
        proc = self._procs.get(name)
        return proc.tail(n) if proc else ""


def resource_path(obj: dict[str, Any]) -> str:
    """The REST collection path of a (core, apps, CRD, ...) object."""
    api = obj["apiVersion"]
    kind = obj["kind"]
    plural = _PLURALS.get(kind, kind.lower() + "s")
    prefix = f"/api/{api}" if "/" not in api else f"/apis/{api}"
    ns = obj["metadata"].get("namespace")
    if ns and kind not in _CLUSTER_SCOPED:
        return f"{prefix}/namespaces/{ns}/{plural}"
    return f"{prefix}/{plural}"


_PLURALS = {
    "EndpointSlice": "endpointslices", "ServiceEntry": "serviceentries", "Alias": "aliases",
    "CustomResourceDefinition": "customresourcedefinitions", "PodDisruptionBudget":
    "poddisruptionbudgets", "NetworkPolicy": "networkpolicies",
    "ClusterRoleBinding": "clusterrolebindings", "RoleBinding": "rolebindings",
}
_CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}


class _ConfigMapSync:
    """Keeps a directory equal to a ``kube-system`` ConfigMap, one file per key,
    like kubelet's ConfigMap volume: list, then watch, relist on any error; an
    ``optional`` ConfigMap that is absent is an empty directory.

    As kubelet's ``AtomicWriter`` does, every key is written into a fresh
    hidden directory that the ``..data`` symlink is then swapped to, and each
    key is a symlink through ``..data``: a reader (CoreDNS's ``import``) sees
    the ConfigMap as it was before or after a change, never half of it.
    """

    def __init__(self, cluster: LocalCluster, name: str, directory: Path, *,
                 optional: bool = False) -> None:
        self.cluster = cluster
        self.name = name
        self.dir = directory
        self.optional = optional
        self._shown: dict[str, str] | None = None
        self._latest: dict[str, str] = {}
        self._rv = 0
        self._holds = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._first = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{name}-cm-sync", daemon=True)
        self._conn: http.client.HTTPSConnection | None = None

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._thread.start()

    def wait_first(self, timeout: float) -> None:
        if not self._first.wait(timeout):
            raise ClusterError(f"the {self.name} ConfigMap never reached {self.dir}")

    def stop(self) -> None:
        self._stop.set()
        conn = self._conn
        if conn is not None and conn.sock is not None:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(5)

    def keys(self) -> list[str]:
        """The keys materialised now (the files a glob in the directory sees)."""
        return sorted(p.name for p in self.dir.iterdir()
                      if p.is_symlink() and not p.name.startswith(".."))

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Materialise nothing until the block ends, then the ConfigMap as the
        API server has it then (kubelet, too, writes only what it reads at a
        sync, never the states in between)."""
        with self._lock:
            self._holds += 1
        try:
            yield
        finally:
            now = self._read()
            with self._lock:
                self._holds -= 1
                self._take(now)
                if not self._holds:
                    self._materialise(self._latest)

    def _read(self) -> dict[str, Any]:
        try:
            cm: dict[str, Any] = self.cluster.request(
                "GET", f"/api/v1/namespaces/kube-system/configmaps/{self.name}", timeout=5)
        except ClusterError as e:
            if not (self.optional and "HTTP 404" in str(e)):
                raise
            return {}
        return cm

    def _take(self, cm: dict[str, Any]) -> None:
        # Watch events still on their way are older than what a hold's end read.
        rv = int((cm.get("metadata") or {}).get("resourceVersion") or 0)
        if rv and rv < self._rv:
            return
        self._rv = max(self._rv, rv)
        self._latest = dict(cm.get("data") or {})

    def _write(self, cm: dict[str, Any]) -> None:
        with self._lock:
            self._take(cm)
            if not self._holds:
                self._materialise(self._latest)
        self._first.set()

    def _materialise(self, data: dict[str, str]) -> None:
        if data == self._shown:
            return
        payload = Path(tempfile.mkdtemp(prefix="..", dir=self.dir))
        for key, text in data.items():
            (payload / key).write_text(text)
        link = self.dir / "..data"
        old = link.resolve() if link.is_symlink() else None
        tmp = self.dir / "..data_tmp"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(payload.name)
        # A key that goes loses its name first and one that comes gets it
        # last, so that no name ever points at nothing.
        for key in set(self._shown or {}) - set(data):
            with contextlib.suppress(OSError):
                (self.dir / key).unlink()
        tmp.replace(link)  # the one atomic step: every key's text changes at once
        for key in data:
            if not (self.dir / key).is_symlink():
                (self.dir / key).symlink_to(Path("..data") / key)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        self._shown = dict(data)

    def _run(self) -> None:
        base = "/api/v1/namespaces/kube-system/configmaps"
        while not self._stop.is_set():
            try:
                cm = self._read()
                self._write(cm)
                if not cm:  # an optional ConfigMap that is absent
                    self._stop.wait(0.2)
                    continue
                rv = cm["metadata"]["resourceVersion"]
                for event in self._watch(f"{base}?watch=1&fieldSelector=metadata.name%3D"
                                         f"{self.name}&resourceVersion={rv}"
                                         f"&allowWatchBookmarks=true"):
                    if event.get("type") in ("ADDED", "MODIFIED"):
                        self._write(event["object"])
                    elif event.get("type") in ("DELETED", "ERROR"):
                        break
            except (OSError, http.client.HTTPException, ClusterError, ValueError, KeyError):
                pass
            self._stop.wait(0.5)

    def _watch(self, path: str) -> Iterator[dict[str, Any]]:
        conn = http.client.HTTPSConnection(
            "127.0.0.1", self.cluster.api_port, context=self.cluster._ssl, timeout=60
        )
        self._conn = conn
        try:
            conn.request("GET", path, headers={"Authorization": f"Bearer {self.cluster.token}"})
            resp = conn.getresponse()
            if resp.status != 200:
                return
            while not self._stop.is_set():
                line = resp.readline()
                if not line:
                    return
                yield json.loads(line)
        finally:
            conn.close()
            self._conn = None
