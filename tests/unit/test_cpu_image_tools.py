"""The CPU image's two build tools on small libraries that gcc makes here: docker/cpu/drop_fatbin.py cuts the GPU code
out of a library that still loads and runs, and docker/cpu/cuda_stubs.py gives a library that links a missing CUDA
runtime a stub under which it loads and finds no device."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.skipif(not (shutil.which("gcc") and shutil.which("readelf")), reason="needs gcc and binutils")

FATBIN = textwrap.dedent("""
    __attribute__((section(".nv_fatbin"), used)) static const char kernels[1 << 20] = {1, 2, 3};
    static const char *const registered = kernels;
    const char *name(void) { return "read-only data before the GPU code"; }
    int answer(int x) { return x * 2 + (registered != 0); }
""")
# a library that calls the CUDA runtime as torch's do: versioned symbols of libcudart.so.12, an error string getter
USER = textwrap.dedent("""
    int cudaGetDeviceCount(int *count);
    const char *cudaGetErrorString(int error);
    int devices(void) { int n = -1; int err = cudaGetDeviceCount(&n); return err == 100 ? 0 : n; }
    const char *why(void) { return cudaGetErrorString(100); }
""")
RUNTIME = textwrap.dedent("""
    int cudaGetDeviceCount(int *count) { *count = 8; return 0; }
    const char *cudaGetErrorString(int error) { return "real"; }
""")


def _gcc(folder: Path, name: str, source: str, *flags: str) -> Path:
    code = folder.parent / f"{folder.name}-{name}.c"
    code.write_text(source)
    out = folder / name
    subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-o", str(out), str(code), *flags], check=True)
    return out


def _python(code: str, cwd: Path) -> str:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, check=True).stdout


def test_drop_fatbin_cuts_the_gpu_code_and_the_library_still_runs(tmp_path):
    library = _gcc(tmp_path, "libk.so", FATBIN)
    before = library.stat().st_size
    out = subprocess.run([sys.executable, str(ROOT / "docker/cpu/drop_fatbin.py"), str(library)],
                         capture_output=True, text=True, check=True).stdout
    assert "1 MB of GPU code cut" in out, out
    assert library.stat().st_size < before - 1_000_000
    probe = ("import ctypes; lib = ctypes.CDLL('./libk.so'); lib.name.restype = ctypes.c_char_p; "
             "print(lib.answer(20), lib.name().decode())")
    assert _python(probe, tmp_path).strip() == "41 read-only data before the GPU code"
    again = subprocess.run([sys.executable, str(ROOT / "docker/cpu/drop_fatbin.py"), str(library)],
                           capture_output=True, text=True, check=True).stdout
    assert "no .nv_fatbin" in again or "left as it is" in again  # a second run changes nothing


def test_cuda_stubs_let_a_library_that_links_the_cuda_runtime_load_without_it(tmp_path):
    site = tmp_path / "site"
    (site / "torch" / "lib").mkdir(parents=True)
    real = tmp_path / "real"
    real.mkdir()
    version = real / "cudart.map"
    version.write_text("libcudart.so.12 { global: cudaGetDeviceCount; cudaGetErrorString; local: *; };\n")
    _gcc(real, "libcudart.so.12", RUNTIME, "-Wl,-soname,libcudart.so.12", f"-Wl,--version-script={version}")
    user = _gcc(site / "torch" / "lib", "libuser.so", USER, f"-L{real}", "-l:libcudart.so.12", "-Wl,-rpath,$ORIGIN")
    subprocess.run([sys.executable, str(ROOT / "docker/cpu/cuda_stubs.py"), str(site)], check=True,
                   capture_output=True, text=True)
    stub = site / "torch" / "lib" / "libcudart.so.12"
    assert stub.is_file() and b"not in this CPU-only image" in stub.read_bytes()
    probe = (f"import ctypes; lib = ctypes.CDLL({str(user)!r}); lib.why.restype = ctypes.c_char_p; "
             "print(lib.devices(), lib.why().decode())")
    devices, message = _python(probe, tmp_path).strip().split(" ", 1)
    assert devices == "0" and "not in this CPU-only image" in message
