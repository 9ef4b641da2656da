"""Test certificates, made at test time with Debian's openssl command.

``make_certs(directory)`` writes two independent CAs and, signed by them, the
certificates the TLS tests need (each as NAME.pem plus NAME.key):

- ``server``: the broker's, for localhost and 127.0.0.1 (CA ``ca``);
- ``server2``: the same names, a second key: what a rotation installs;
- ``expired``: for localhost and 127.0.0.1, valid only in 2020;
- ``wronghost``: valid, but for wrong.example only;
- ``otherca_server``: for localhost and 127.0.0.1, signed by ``otherca``;
- ``client``: a client certificate with CN ``orders`` and the SPIFFE ID
  ``spiffe://example.org/ns/shop/sa/orders`` as its URI SAN (CA ``ca``);
- ``otherca_client``: a client certificate signed by ``otherca``;
- ``subject_client``: a client certificate with subject ``O=shop, CN=billing``
  and no URI SAN (a clients file maps it by subject; CA ``ca``);
- ``unmapped_client``: a client certificate (``CN=stranger``, CA ``ca``) that
  no clients file in the tests maps.

Keys are EC P-256 and written 0600, as PostgreSQL insists for its key.
Nothing here is a secret worth keeping: the directory is the caller's
temporary one. Pure functions over the file system; not thread-safe per
directory.
"""

import os
import subprocess
from typing import Dict, Optional

SPIFFE_ID = "spiffe://example.org/ns/shop/sa/orders"
LOCAL_SANS = "DNS:localhost,IP:127.0.0.1"


def _openssl(*args: str, cwd: str) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _key(directory: str, name: str) -> str:
    path = os.path.join(directory, f"{name}.key")
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path,
             cwd=directory)
    os.chmod(path, 0o600)
    return path


def _ca(directory: str, name: str) -> None:
    key = _key(directory, name)
    _openssl("req", "-x509", "-new", "-key", key, "-subj", f"/CN=session-broker test {name}",
             "-days", "2", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             "-out", os.path.join(directory, f"{name}.pem"), cwd=directory)


def _signed(directory: str, name: str, ca: str, subject: str, sans: str, client: bool,
            dates: Optional[tuple] = None) -> None:
    """NAME.pem/.key signed by CA; DATES=(start, end) as YYYYMMDDHHMMSSZ."""
    key = _key(directory, name)
    csr = os.path.join(directory, f"{name}.csr")
    _openssl("req", "-new", "-key", key, "-subj", subject, "-out", csr, cwd=directory)
    ext = os.path.join(directory, f"{name}.ext")
    with open(ext, "w", encoding="utf-8") as f:
        f.write(f"subjectAltName={sans}\n"
                f"extendedKeyUsage={'clientAuth' if client else 'serverAuth'}\n"
                "basicConstraints=CA:FALSE\n")
    out = os.path.join(directory, f"{name}.pem")
    ca_pem, ca_key = os.path.join(directory, f"{ca}.pem"), os.path.join(directory, f"{ca}.key")
    if dates is None:
        _openssl("x509", "-req", "-in", csr, "-CA", ca_pem, "-CAkey", ca_key, "-CAcreateserial",
                 "-days", "2", "-extfile", ext, "-out", out, cwd=directory)
        return
    # Only `openssl ca` takes arbitrary validity dates (x509 -days must be > 0).
    db = os.path.join(directory, f"{name}.db")
    os.makedirs(db, exist_ok=True)
    open(os.path.join(db, "index.txt"), "w").close()
    with open(os.path.join(db, "serial"), "w", encoding="utf-8") as f:
        f.write("1000\n")
    cfg = os.path.join(db, "ca.cnf")
    with open(cfg, "w", encoding="utf-8") as f:
        f.write(f"[ca]\ndefault_ca=d\n[d]\ndatabase={db}/index.txt\nnew_certs_dir={db}\n"
                f"serial={db}/serial\ndefault_md=sha256\npolicy=p\nunique_subject=no\n"
                "[p]\ncommonName=supplied\n")
    _openssl("ca", "-batch", "-config", cfg, "-cert", ca_pem, "-keyfile", ca_key, "-in", csr,
             "-startdate", dates[0], "-enddate", dates[1], "-extfile", ext, "-notext",
             "-out", out, cwd=directory)


def make_certs(directory: str) -> Dict[str, str]:
    """Writes every certificate into DIRECTORY; returns {name: directory/name}."""
    _ca(directory, "ca")
    _ca(directory, "otherca")
    _signed(directory, "server", "ca", "/CN=localhost", LOCAL_SANS, client=False)
    _signed(directory, "server2", "ca", "/CN=localhost", LOCAL_SANS, client=False)
    _signed(directory, "expired", "ca", "/CN=localhost", LOCAL_SANS, client=False,
            dates=("20200101000000Z", "20200102000000Z"))
    _signed(directory, "wronghost", "ca", "/CN=wrong.example", "DNS:wrong.example",
            client=False)
    _signed(directory, "otherca_server", "otherca", "/CN=localhost", LOCAL_SANS, client=False)
    _signed(directory, "client", "ca", "/O=shop/CN=orders", f"URI:{SPIFFE_ID}", client=True)
    _signed(directory, "otherca_client", "otherca", "/CN=orders", f"URI:{SPIFFE_ID}",
            client=True)
    # Mapped by certificate subject (no URI SAN), and one the clients file of
    # the mTLS identity test does not map.
    _signed(directory, "subject_client", "ca", "/O=shop/CN=billing", "DNS:billing.example",
            client=True)
    _signed(directory, "unmapped_client", "ca", "/O=shop/CN=stranger", "DNS:stranger.example",
            client=True)
    names = ["ca", "otherca", "server", "server2", "expired", "wronghost", "otherca_server",
             "client", "otherca_client", "subject_client", "unmapped_client"]
    return {n: os.path.join(directory, n) for n in names}
