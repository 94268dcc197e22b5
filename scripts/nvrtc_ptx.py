#!/usr/bin/env python3
"""Compiles one kernel file to PTX with NVRTC (through ctypes), the same compiler
the CUDA backend uses at run time. Usage: nvrtc_ptx.py LIBNVRTC SOURCE.cu ARCH OUT.ptx
(ARCH as compute_80, compute_90, compute_90a). The kernels include only
common.cuh, found beside the source."""
import ctypes
import os
import sys


def check(lib, status, program=None, what=""):
    if status == 0:
        return
    lib.nvrtcGetErrorString.restype = ctypes.c_char_p
    message = lib.nvrtcGetErrorString(status).decode()
    log = ""
    if program is not None:
        size = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(program, ctypes.byref(size))
        buf = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetProgramLog(program, buf)
        log = buf.value.decode(errors="replace")
    sys.exit(f"{what}: {message}\n{log}")


def main():
    libpath, source, arch, out = sys.argv[1:5]
    lib = ctypes.CDLL(libpath)
    major, minor = ctypes.c_int(), ctypes.c_int()
    check(lib, lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)), what="nvrtcVersion")
    with open(source, "rb") as f:
        text = f.read()
    program = ctypes.c_void_p()
    name = os.path.basename(source).encode()
    check(lib, lib.nvrtcCreateProgram(ctypes.byref(program), text, name, 0, None, None), what="nvrtcCreateProgram")
    include = os.path.dirname(os.path.abspath(source))
    # The options the backend passes (crates/backend-cuda/src/kernels.rs).
    options = [f"--gpu-architecture={arch}", "--std=c++17", f"-I{include}", "--device-as-default-execution-space"]
    argv = (ctypes.c_char_p * len(options))(*[o.encode() for o in options])
    status = lib.nvrtcCompileProgram(program, len(options), argv)
    check(lib, status, program, f"{source} for {arch}")
    size = ctypes.c_size_t()
    check(lib, lib.nvrtcGetPTXSize(program, ctypes.byref(size)), program, "nvrtcGetPTXSize")
    ptx = ctypes.create_string_buffer(size.value)
    check(lib, lib.nvrtcGetPTX(program, ptx), program, "nvrtcGetPTX")
    with open(out, "wb") as f:
        f.write(ptx.value)
    print(f"nvrtc {major.value}.{minor.value}: {source} -> {out} ({size.value} bytes)")


if __name__ == "__main__":
    main()
