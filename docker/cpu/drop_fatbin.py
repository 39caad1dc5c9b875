"""Cut the GPU kernels (the .nv_fatbin section) out of torch's CUDA libraries in the CPU image.

libtorch_cuda.so is 975 MB, 914 MB of it GPU code (.nv_fatbin) that a host without CUDA never reads: with the
stubbed CUDA runtime (cuda_stubs.py), the kernels' registration receives a pointer to it and nothing ever follows
that pointer. The loader still needs the library (torch's Python bindings link it), so the library stays, less the
fatbin: the read-only LOAD segment that holds it is split in two around it (their addresses unchanged, so no code
or relocation moves), the bytes in between leave the file, and every later file offset moves down by as much. The
split takes the slot of the PT_NOTE header (the build-id note, which nothing reads at run time); a library that has
no such slot, or whose layout is not the one expected, is left as it is.

    python drop_fatbin.py LIBRARY...
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

PAGE = 0x1000
PT_LOAD, PT_NOTE = 1, 4
SHT_NOBITS = 8
PHDR = struct.Struct("<IIQQQQQQ")  # type, flags, offset, vaddr, paddr, filesz, memsz, align
SHDR = struct.Struct("<IIQQQQIIQQ")  # name, type, flags, addr, offset, size, link, info, addralign, entsize


def _sections(data: bytes) -> tuple[int, list[list[int]], dict[str, int]]:
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    sections = [list(SHDR.unpack_from(data, shoff + i * shentsize)) for i in range(shnum)]
    names = sections[shstrndx][4]
    index = {data[names + s[0]:data.index(b"\0", names + s[0])].decode(): i for i, s in enumerate(sections)}
    return shoff, sections, index


def drop(path: Path) -> str:
    data = bytearray(path.read_bytes())
    if data[:5] != b"\x7fELF\x02":
        return "not a 64-bit ELF"
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    headers = [list(PHDR.unpack_from(data, phoff + i * phentsize)) for i in range(phnum)]
    shoff, sections, index = _sections(data)
    if ".nv_fatbin" not in index:
        return "no .nv_fatbin"
    fatbin = sections[index[".nv_fatbin"]]
    start, end = fatbin[4], fatbin[4] + fatbin[5]
    cut_start, cut_end = -(-start // PAGE) * PAGE, end // PAGE * PAGE
    holders = [h for h in headers if h[0] == PT_LOAD and h[2] < cut_start and h[2] + h[5] > cut_end]
    notes = [h for h in headers if h[0] == PT_NOTE]
    if len(holders) != 1 or not notes or cut_end - cut_start < 16 * PAGE:
        return "left as it is (unexpected layout)"
    load = holders[0]
    if load[2] != load[3] or load[5] != load[6]:  # a read-only segment whose file offsets are its addresses
        return "left as it is (unexpected segment)"
    overlapping = [h for h in headers if h is not load and h[5] and h[2] < cut_end and h[2] + h[5] > cut_start]
    if overlapping:
        return "left as it is (another segment overlaps the fatbin)"
    if shoff < cut_end:
        return "left as it is (section headers before the fatbin's end)"
    delta = cut_end - cut_start
    second = [PT_LOAD, load[1], cut_end - delta, cut_end, cut_end, load[2] + load[5] - cut_end,
              load[2] + load[5] - cut_end, load[7]]
    load[5] = load[6] = cut_start - load[2]
    headers.remove(notes[0])
    headers.insert(headers.index(load) + 1, second)
    for header in headers:
        if header is not second and header[2] >= cut_end:
            header[2] -= delta
    for section in sections:
        if section is fatbin:
            section[1] = SHT_NOBITS
        elif section[4] >= cut_end:
            section[4] -= delta
    for i, header in enumerate(headers):
        PHDR.pack_into(data, phoff + i * phentsize, *header)
    shentsize, = struct.unpack_from("<H", data, 0x3A)
    for i, section in enumerate(sections):
        SHDR.pack_into(data, shoff + i * shentsize, *section)
    struct.pack_into("<Q", data, 0x28, shoff - delta)
    path.write_bytes(bytes(data[:cut_start]) + bytes(data[cut_end:]))
    return f"{delta / 2**20:.0f} MB of GPU code cut"


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    for name in sys.argv[1:]:
        print(f"drop_fatbin: {name}: {drop(Path(name))}")
