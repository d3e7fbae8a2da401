"""Package size: `sam build` the function into a temporary directory, zip it, say what is inside.

The Lambda Python runtime already provides boto3 and what it depends on, so the artifact is
also sized without those (what a build that keeps them out would ship), and without what the
public Powertools layer provides (what the function would ship with that layer attached).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

# In the Lambda Python runtime: boto3 with its dependencies.
RUNTIME_PROVIDED = frozenset(
    {"boto3", "botocore", "s3transfer", "jmespath", "dateutil", "python-dateutil", "urllib3", "six"}
)
# In the public Powertools layer (it leaves the SDK to the runtime).
LAYER_PROVIDED = frozenset(
    {"aws-lambda-powertools", "aws-xray-sdk", "wrapt", "wrapt-stubs", "typing-extensions"}
)
_ELF_MACHINES = {0x3E: "x86_64", 0xB7: "aarch64"}
_LOCAL_HEADER = 30
_CENTRAL_HEADER = 46


@dataclass
class Artifact:
    """The zipped build: total, per top-level distribution, and its native extensions."""

    zip_bytes: int
    by_distribution: dict[str, int] = field(default_factory=dict)
    native: dict[str, str] = field(default_factory=dict)

    def without(self, provided: frozenset[str]) -> int:
        return self.zip_bytes - sum(
            size for name, size in self.by_distribution.items() if name in provided
        )

    def biggest(self, count: int = 6) -> list[tuple[str, int]]:
        return sorted(self.by_distribution.items(), key=lambda item: -item[1])[:count]


def find_sam() -> str | None:
    """SAM_CLI, else the Makefile's .venv-sam, else `sam` on PATH."""
    candidates = [os.environ.get("SAM_CLI"), str(Path(".venv-sam/bin/sam").resolve())]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return candidate
    return shutil.which("sam")


def distribution(top_level: str) -> str:
    """The distribution a top-level entry belongs to (`yaml` and `PyYAML-6.0.dist-info`
    both -> `pyyaml`), normalized as pip does."""
    name = top_level
    for suffix in (".dist-info", ".data"):
        if name.endswith(suffix):
            name = name[: -len(suffix)].rsplit("-", 1)[0]
    name = name.removesuffix(".py").lower().replace("_", "-")
    aliases = {"yaml": "pyyaml", "-yaml": "pyyaml", "dateutil": "python-dateutil"}
    return aliases.get(name, name)


def zip_directory(directory: Path, archive: Path) -> Artifact:
    """Zip as `sam deploy` does (deflate), measuring each entry's compressed size."""
    artifact = Artifact(zip_bytes=0)
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        for path in sorted(directory.rglob("*")):
            if not path.is_file():
                continue
            relative = path.relative_to(directory)
            bundle.write(path, relative.as_posix())
            if path.suffix == ".so":
                artifact.native[relative.as_posix()] = _elf_machine(path)
    with zipfile.ZipFile(archive) as bundle:
        for info in bundle.infolist():
            key = distribution(info.filename.split("/", 1)[0])
            # An entry costs its compressed bytes plus its local and central headers, which
            # add up over thousands of files: counted, so sizes "without X" are true.
            name_bytes = len(info.filename.encode())
            entry = info.compress_size + _LOCAL_HEADER + _CENTRAL_HEADER + 2 * name_bytes
            entry += len(info.extra) * 2
            artifact.by_distribution[key] = artifact.by_distribution.get(key, 0) + entry
    artifact.zip_bytes = archive.stat().st_size
    return artifact


def _elf_machine(path: Path) -> str:
    with path.open("rb") as handle:
        header = handle.read(20)
    if header[:4] != b"\x7fELF":
        return "not ELF"
    return _ELF_MACHINES.get(int.from_bytes(header[18:20], "little"), "other")


def build_function(sam: str, repo: Path, function: str = "IngressFunction") -> Artifact:
    """`sam build` the template into a temporary directory and zip the function's artifact."""
    with tempfile.TemporaryDirectory(prefix="cache-ingress-bench-") as scratch:
        build_dir = Path(scratch) / "build"
        environment = {**os.environ, "SAM_CLI_TELEMETRY": "0"}
        completed = subprocess.run(  # noqa: S603 - a fixed argument list, no shell
            [
                sam,
                "build",
                "--template-file",
                str(repo / "template.yaml"),
                "--build-dir",
                str(build_dir),
                "--base-dir",
                str(repo),
                "--no-cached",
            ],
            cwd=scratch,
            env=environment,
            capture_output=True,
            text=True,
            check=False,
        )
        if completed.returncode != 0:
            raise RuntimeError(f"sam build failed:\n{completed.stdout}\n{completed.stderr}")
        return zip_directory(build_dir / function, Path(scratch) / f"{function}.zip")


def zip_floor(repo: Path) -> int:
    """What the floor would ship: its handler alone (everything else is in the runtime)."""
    with tempfile.TemporaryDirectory(prefix="cache-ingress-floor-") as scratch:
        archive = Path(scratch) / "floor.zip"
        with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
            bundle.write(repo / "benchmarks" / "floor_handler.py", "floor_handler.py")
        return archive.stat().st_size
