"""Certificates and keys of the simulated cluster, made with the `openssl` command line tool.

One CA signs the API server's serving certificate (valid for 127.0.0.1/localhost and the in-cluster service
names) and one admin client certificate in `system:masters`; every component and the kubeconfig use that admin
identity, which is enough for a single-user test cluster. A separate RSA key pair signs service-account tokens.
openssl is used instead of a Python crypto package because it is on every Debian machine (bootstrap installs it).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from cli.devcluster.errors import DevClusterError


@dataclass(frozen=True)
class Pki:
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    admin_cert: Path
    admin_key: Path
    sa_key: Path
    sa_pub: Path


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise DevClusterError(f"openssl {args[0]} failed: {proc.stderr.strip()}")


def ensure_pki(directory: Path) -> Pki:
    """Create the certificates once; later calls reuse them (the cluster's etcd data refers to them)."""
    directory.mkdir(parents=True, exist_ok=True)
    pki = Pki(*(directory / n for n in ("ca.crt", "ca.key", "apiserver.crt", "apiserver.key", "admin.crt",
                                          "admin.key", "sa.key", "sa.pub")))
    if all(p.exists() for p in vars(pki).values()):
        return pki
    d = directory
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "3650",
             "-subj", "/CN=endpointctl-devcluster-ca", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature", cwd=d)
    san = ("subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,"
           "DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local")
    (d / "server.ext").write_text(f"{san}\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature,keyEncipherment\n")
    (d / "client.ext").write_text("extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature,keyEncipherment\n")
    for name, subj, ext in (("apiserver", "/CN=kube-apiserver", "server.ext"),
                            ("admin", "/O=system:masters/CN=endpointctl-admin", "client.ext")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", subj, cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.crt", "-days", "3650", "-extfile", ext, cwd=d)
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=d)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=d)
    for p in d.glob("*.key"):
        p.chmod(0o600)
    return pki
