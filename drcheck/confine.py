"""Confine a program's writes to a few directories with Linux Landlock.

`python -m drcheck.confine --write DIR [--write DIR …] -- PROGRAM ARGS…` restricts itself,
then execs PROGRAM: the kernel refuses every file creation, write, removal or rename
outside the given directories, for PROGRAM and everything it starts; reading and
executing stay allowed. drcheck runs restore tools this way, so a restore cannot write
outside its sandbox even if the backup holds an escaping path or the tool has a bug.

Run as a wrapper process (not in `preexec_fn`, which is unsafe in a threaded program).
Exit status 126 with one line on stderr when confinement is unavailable or fails; callers
check `available()` first and say what they do without it.
"""

from __future__ import annotations

import ctypes
import os
import sys

_CREATE_RULESET, _ADD_RULE, _RESTRICT_SELF = 444, 445, 446  # syscall numbers, same on x86_64 and arm64
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38

_WRITE_FILE, _REMOVE_DIR, _REMOVE_FILE = 1 << 1, 1 << 4, 1 << 5
_MAKE = sum(1 << bit for bit in range(6, 13))  # char, dir, reg, sock, fifo, block, sym
_REFER, _TRUNCATE = 1 << 13, 1 << 14  # ABI 2 and 3
_FILE_RIGHTS = _WRITE_FILE | _TRUNCATE  # the only rights a rule on a single file may grant


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def abi_version() -> int:
    """The kernel's Landlock ABI version, 0 when Landlock is unavailable or disabled."""
    if not sys.platform.startswith("linux"):
        return 0
    version = _libc().syscall(_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    return max(version, 0)


def available() -> bool:
    return abi_version() >= 1


def write_rights(abi: int) -> int:
    """Every write-like access right the kernel's ABI knows."""
    rights = _WRITE_FILE | _REMOVE_DIR | _REMOVE_FILE | _MAKE
    if abi >= 2:
        rights |= _REFER
    if abi >= 3:
        rights |= _TRUNCATE
    return rights


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def restrict_writes(allowed: list[str]) -> None:
    """Restrict this process (and what it will exec) to writing only below `allowed`
    (directories, or single files such as /dev/null). Raise OSError when it cannot."""
    abi = abi_version()
    if abi < 1:
        raise OSError("Landlock is not available in this kernel")
    libc = _libc()
    handled = write_rights(abi)
    attr = ctypes.c_uint64(handled)
    ruleset = libc.syscall(_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(8), ctypes.c_uint32(0))
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
    try:
        for path in allowed:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            try:
                rights = handled if os.path.isdir(path) else handled & _FILE_RIGHTS
                rule = _PathBeneath(rights, fd)
                if libc.syscall(_ADD_RULE, ruleset, _RULE_PATH_BENEATH, ctypes.byref(rule), ctypes.c_uint32(0)) < 0:
                    raise OSError(ctypes.get_errno(), f"landlock_add_rule failed for {path}")
            finally:
                os.close(fd)
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
        if libc.syscall(_RESTRICT_SELF, ruleset, ctypes.c_uint32(0)) < 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
    finally:
        os.close(ruleset)


def command(argv: list[str], writable: list[str]) -> list[str]:
    """The argv that runs `argv` confined to writing below `writable`."""
    prefix = [sys.executable, "-m", "drcheck.confine"]
    for path in writable:
        prefix += ["--write", str(path)]
    return [*prefix, "--", *argv]


def main(args: list[str]) -> int:
    if "--" not in args:
        print("usage: python -m drcheck.confine --write DIR … -- PROGRAM ARGS…", file=sys.stderr)
        return 2
    split = args.index("--")
    options, program = args[:split], args[split + 1:]
    if not program or len(options) % 2 or any(flag != "--write" for flag in options[::2]):
        print("usage: python -m drcheck.confine --write DIR … -- PROGRAM ARGS…", file=sys.stderr)
        return 2
    try:
        restrict_writes(options[1::2])
    except OSError as exc:
        print(f"drcheck.confine: cannot confine writes: {exc}", file=sys.stderr)
        return 126
    try:
        os.execvp(program[0], program)
    except OSError as exc:
        print(f"drcheck.confine: {program[0]}: {exc.strerror}", file=sys.stderr)
        return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
