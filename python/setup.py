"""Builds tally_torch, the PyTorch c10d backend over libtally.

libtally is found through pkg-config (an installed Tally), or, with TALLY_BUILD_DIR set, in a
CMake build tree of this repository (what `make torch` does). Either way the extension gets an
rpath to the library's directory, so it imports without LD_LIBRARY_PATH.

  python3 setup.py build_ext --inplace           # against the installed libtally
  TALLY_BUILD_DIR=../build python3 setup.py build
  pip install --no-build-isolation ./python      # Debian's torch: use /usr/bin/python3's pip
"""
import os
import shlex
import subprocess

from setuptools import setup
from torch.utils.cpp_extension import BuildExtension, CppExtension

HERE = os.path.dirname(os.path.abspath(__file__))


def tally_paths():
    """(include dirs, library dirs) of libtally."""
    build_dir = os.environ.get("TALLY_BUILD_DIR")
    if build_dir:
        return [os.path.join(HERE, "..", "include")], [os.path.abspath(build_dir)]
    try:
        cflags = subprocess.check_output(["pkg-config", "--cflags-only-I", "tally"], text=True)
        libs = subprocess.check_output(["pkg-config", "--libs-only-L", "tally"], text=True)
    except (OSError, subprocess.CalledProcessError) as e:
        raise SystemExit("tally_torch: libtally not found through pkg-config (install Tally, set "
                         "PKG_CONFIG_PATH, or set TALLY_BUILD_DIR to a CMake build directory): %s" % e)
    return ([f[2:] for f in shlex.split(cflags) if f.startswith("-I")],
            [os.path.normpath(f[2:]) for f in shlex.split(libs) if f.startswith("-L")])


include_dirs, library_dirs = tally_paths()
sources = ["module.cpp", "process_group.cpp", "point_to_point.cpp", "worker.cpp", "tensor_args.cpp", "derive.cpp"]


def have_grow(include_dirs, library_dirs):
    """Whether libtally has tally_comm_grow and tally_comm_join, in tally.h and in libtally.so:
    the extension's grow_id, grow and join are built only then."""
    def has(dirs, name, text):
        for d in dirs:
            try:
                with open(os.path.join(d, name), "rb") as f:
                    if text in f.read():
                        return True
            except OSError:
                pass
        return False
    return (has(include_dirs, "tally.h", b"tally_comm_join(") and
            has(library_dirs, "libtally.so", b"tally_comm_join\0"))


macros = [("TALLY_TORCH_HAVE_GROW", "1")] if have_grow(include_dirs, library_dirs) else []

setup(
    name="tally_torch",
    version="0.1.0",
    description="Tally collectives as a torch.distributed backend",
    packages=["tally_torch"],
    ext_modules=[
        CppExtension(
            "tally_torch._C",
            [os.path.join("csrc", s) for s in sources],
            include_dirs=include_dirs,
            library_dirs=library_dirs,
            libraries=["tally"],
            define_macros=macros,
            extra_compile_args=["-O2", "-Wall"],
            extra_link_args=["-Wl,-rpath," + d for d in library_dirs],
        )
    ],
    cmdclass={"build_ext": BuildExtension},
)
