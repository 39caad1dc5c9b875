"""Stand-ins for the NVIDIA libraries that PyPI's torch links against, so that it runs on CPUs without them.

PyPI's torch for linux/x86_64 is the CUDA build: libtorch_cpu.so itself links libcudart and libcupti, and
libtorch_python.so links libtorch_cuda.so and through it cuBLAS, cuDNN, NCCL, ...; `pip install --no-deps torch`
without the nvidia-* wheels (4.3 GB) does not even import. PyTorch's CPU-only wheels sit on PyTorch's own index,
which not every build host reaches; PyPI does. So the CPU image keeps PyPI's torch (the CUDA image's very bits, so
the CPU answers are the same) and gives the dynamic loader a small stub for every NVIDIA library that torch names:
each exports exactly the symbols (and symbol versions) that torch's libraries import from it, and every one of them
returns 100 (cudaErrorNoDevice / CUDA_ERROR_NO_DEVICE; an error status for every other library), the error-string
getters a message. torch then finds no CUDA device (torch.cuda.is_available() is False) and runs on the CPU.

    python cuda_stubs.py SITE_PACKAGES     (binutils' readelf and gcc on PATH)

Each stub goes where the first library that names it looks (the first existing folder of its RPATH/RUNPATH):
torch/lib for torch's; torchvision/ (its image.so's $ORIGIN) for the CUDA runtime and nvJPEG that torchvision's
wheel bundles in torchvision.libs (the Dockerfile removes those two first).

Which libraries are stubbed is read from the ELF files (DT_NEEDED names that neither torch nor the system holds):
a torch that links one more NVIDIA library gets one more stub, and a symbol left out fails the import check that
the Dockerfile runs right after.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

NO_DEVICE = 100  # cudaErrorNoDevice (cudart), CUDA_ERROR_NO_DEVICE (driver): torch counts 0 devices, silently
# getters that return a C string, not a status: they must hand back a readable one
STRING_GETTERS = re.compile(r"(Error|Status|Result)(String|Name)$|^ncclGetLastError$")
# unversioned imports (NCCL, cuSPARSELt, cuFile, NVSHMEM, cuRAND export no symbol versions): their library by prefix
PREFIXES = {"nccl": "libnccl.", "cusparseLt": "libcusparseLt.", "cuFile": "libcufile.", "nvshmem": "libnvshmem",
            "curand": "libcurand."}


def readelf(*args: str) -> str:
    return subprocess.run(["readelf", "-W", *args], check=True, capture_output=True, text=True).stdout


def needed(path: Path) -> list[str]:
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", readelf("-d", str(path)))


def version_files(path: Path) -> dict[str, str]:
    """The version names this library requires, each with the file that must define it (.gnu.version_r)."""
    files, current = {}, None
    for line in readelf("-V", str(path)).splitlines():
        if m := re.search(r"File: (\S+)", line):
            current = m.group(1)
        elif (m := re.search(r"Name: (\S+)", line)) and current:
            files[m.group(1)] = current
    return files


def imports(path: Path) -> list[tuple[str, str | None]]:
    """(symbol, version or None) for every strong undefined dynamic symbol."""
    out = []
    for line in readelf("--dyn-syms", str(path)).splitlines():
        cols = line.split()
        if len(cols) >= 8 and cols[6] == "UND" and cols[4] != "WEAK":
            name, _, version = cols[7].partition("@")
            out.append((name, version.lstrip("@") or None))
    return out


def system_libraries() -> set[str]:
    listing = subprocess.run(["ldconfig", "-p"], check=True, capture_output=True, text=True).stdout
    return set(re.findall(r"^\s+(\S+) \(", listing, flags=re.M))


def _is_elf(path: Path) -> bool:
    if not path.is_file():
        return False
    with open(path, "rb") as handle:
        return handle.read(4) == b"\x7fELF"


def search_dir(elf: Path) -> Path:
    """Where the loader looks first for ELF's dependencies: its first existing RPATH/RUNPATH folder."""
    found = re.search(r"\((?:RPATH|RUNPATH)\)\s+Library r(?:un)?path: \[([^\]]*)\]", readelf("-d", str(elf)))
    for entry in (found.group(1).split(":") if found else []):
        folder = Path(entry.replace("$ORIGIN", str(elf.parent)))
        if folder.is_dir():
            return folder.resolve()
    return elf.parent


def wanted(site: Path) -> tuple[dict[str, dict[str, str | None]], dict[str, Path]]:
    """soname -> {symbol: version} for each library that torch/torchvision name and nobody here provides,
    and soname -> the folder its stub goes to."""
    elves = [p for p in (*site.glob("torch/lib/*.so*"), *site.glob("torch/*.so"), *site.glob("torchvision/*.so"),
                         *site.glob("torchvision.libs/*.so*")) if _is_elf(p)]
    present = {p.name for p in elves} | system_libraries()
    stubs: dict[str, dict[str, str | None]] = {}
    places: dict[str, Path] = {}
    for elf in elves:
        missing = [name for name in needed(elf) if name not in present]
        for name in missing:
            stubs.setdefault(name, {})
            places.setdefault(name, search_dir(elf))
        files = version_files(elf)
        for symbol, version in imports(elf):
            owner = files.get(version) if version else next(
                (lib for lib in missing for prefix, start in PREFIXES.items()
                 if symbol.startswith(prefix) and lib.startswith(start)), None)
            if owner in stubs:
                stubs[owner][symbol] = version
    return stubs, places


def build(soname: str, symbols: dict[str, str | None], out: Path, work: Path) -> None:
    lines = ["#include <stdint.h>",
             f'static const char message[] = "{soname}: not in this CPU-only image (a stub: no CUDA here)";',
             f"intptr_t dogbreed_stub_status(void) {{ return {NO_DEVICE}; }}",
             "intptr_t dogbreed_stub_string(void) { return (intptr_t)message; }"]
    for symbol in sorted(symbols):
        target = "dogbreed_stub_string" if STRING_GETTERS.search(symbol) else "dogbreed_stub_status"
        lines.append(f'intptr_t {symbol}(void) __attribute__((alias("{target}")));')
    source = work / f"{soname}.c"
    source.write_text("\n".join(lines) + "\n")
    versions = sorted({v for v in symbols.values() if v})
    if len(versions) > 1:
        sys.exit(f"cuda_stubs: {soname} is imported under several versions {versions}: not handled")
    exported = "".join(f" {s};" for s in sorted(symbols))
    script = work / f"{soname}.map"
    script.write_text(f"{versions[0] if versions else ''} {{{' global:' + exported if exported else ''} local: *; }};\n")
    subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-o", str(out / soname), f"-Wl,-soname,{soname}",
                    f"-Wl,--version-script={script}", str(source)], check=True)


def main(site: str) -> None:
    stubs, places = wanted(Path(site))
    with tempfile.TemporaryDirectory() as work:
        for soname, symbols in sorted(stubs.items()):
            build(soname, symbols, places[soname], Path(work))
            print(f"cuda_stubs: {places[soname] / soname}: {len(symbols)} symbols")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
