"""pip for another platform: `python workshop/pipfor.py PLATFORM PYTHON PIP-ARGS...`.

pip's --platform and --python-version pick wheel tags for the target, but pip evaluates
environment markers (`platform_system == "Linux"`, `python_version < "3.12"`) against the
machine it runs on: on a Linux box a macOS torch then asks for CUDA wheels. This runs pip with
the markers of the target (PLATFORM: linux, macos or windows; PYTHON: 3.11 or 3.12) and adds
that target's --platform tags, --python-version, --implementation cp and --only-binary=:all:.
"""

from __future__ import annotations

import sys

PLATFORM_TAGS = {
    "linux": ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
              "manylinux2014_x86_64", "manylinux_2_5_x86_64", "manylinux1_x86_64", "linux_x86_64"],
    "macos": ["macosx_14_0_arm64", "macosx_13_0_arm64", "macosx_12_0_arm64",
              "macosx_11_0_arm64", "macosx_11_0_universal2", "macosx_10_9_universal2"],
    "windows": ["win_amd64"],
}
MARKERS = {
    "linux": {"sys_platform": "linux", "platform_system": "Linux", "os_name": "posix",
              "platform_machine": "x86_64", "platform_release": "6.1.0", "platform_version": "#1 SMP"},
    "macos": {"sys_platform": "darwin", "platform_system": "Darwin", "os_name": "posix",
              "platform_machine": "arm64", "platform_release": "23.0.0",
              "platform_version": "Darwin Kernel Version 23.0.0"},
    "windows": {"sys_platform": "win32", "platform_system": "Windows", "os_name": "nt",
                "platform_machine": "AMD64", "platform_release": "10", "platform_version": "10.0.19045"},
}


def target_args(platform: str, python: str) -> list[str]:
    args = ["--only-binary=:all:", "--implementation", "cp", "--python-version", python]
    for tag in PLATFORM_TAGS[platform]:
        args += ["--platform", tag]
    return args


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[0] not in MARKERS or argv[1].count(".") != 1:
        print(__doc__, file=sys.stderr)
        return 2
    platform, python, pip_args = argv[0], argv[1], argv[2:]
    from pip._internal.cli.main import main as pip_main
    from pip._vendor.packaging import markers

    host = markers.default_environment()
    target = {**host, **MARKERS[platform], "python_version": python,
              "python_full_version": f"{python}.0", "implementation_name": "cpython",
              "platform_python_implementation": "CPython", "implementation_version": f"{python}.0"}
    markers.default_environment = lambda: dict(target)
    if pip_args and pip_args[0] in ("download", "install", "wheel"):
        pip_args = [pip_args[0], *target_args(platform, python), *pip_args[1:]]
    return pip_main(pip_args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
