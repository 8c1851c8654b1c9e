#!/usr/bin/env bash
# Resolves what cluster/Dockerfile's `pip install` puts into the image, for the image's platform (Linux x86_64,
# glibc 2.35 as in Ray's Ubuntu 22.04 images, the Python of the base image's tag), without installing anything, and
# fails if the result holds two CUDA lines or a package that constraints.txt does not pin at the resolved version.
# It resolves the whole dependency closure (--ignore-installed): a superset of what pip changes on top of the base
# image. Needs network access to PyPI, about 2 minutes. PYTHON picks the interpreter whose pip resolves (pip >= 24
# reads only the wheels' metadata; older pips download every wheel, several GB).
#   cluster/check-image.sh
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
dockerfile=$root/cluster/Dockerfile
python=${PYTHON:-python3}

py_tag=$(sed -n 's|^FROM rayproject/ray:[^-]*-py\([0-9]*\)-.*|\1|p' "$dockerfile")
extras=$(sed -n 's|.*svdbatch-src\[\([a-z0-9,]*\)\].*|\1|p' "$dockerfile")
if [[ -z $py_tag || -z $extras ]]; then
    echo "check-image: cannot read the base image's Python or the extras from $dockerfile" >&2
    exit 2
fi
python_version=${py_tag:0:1}.${py_tag:1}

platforms=(--platform manylinux2014_x86_64)
for minor in $(seq 17 35); do platforms+=(--platform "manylinux_2_${minor}_x86_64"); done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "check-image: resolving .[${extras}] for CPython ${python_version}, manylinux x86_64 (glibc <= 2.35)," \
    "with constraints.txt"
# This machine's pip settings (extra indexes, local wheels, constraints) must not leak into the image's resolution.
env -u PIP_FIND_LINKS -u PIP_EXTRA_INDEX_URL -u PIP_INDEX_URL -u PIP_CONSTRAINT -u PIP_NO_INDEX \
    PIP_CONFIG_FILE=/dev/null "$python" -m pip install --dry-run --ignore-installed --quiet --target "$work/target" \
    --report "$work/report.json" --only-binary=:all: --implementation cp --python-version "$python_version" \
    "${platforms[@]}" -c "$root/constraints.txt" "$root[$extras]" >"$work/pip.log" 2>&1 || {
    grep -v "^ *$" "$work/pip.log" | grep -iv "deprecat\|license\|^ *!!\|^ *\*\*\*\|corresp(\|SPDX\|By 20\|See https" >&2
    echo "check-image: FAILED: pip could not resolve the image's install (above)" >&2
    exit 1
}
"$python" - "$work/report.json" "$root/constraints.txt" <<'PY'
"""Lists the resolved install with each package's pin and CUDA line; exits 1 on two CUDA lines or an unpinned one."""
import json
import re
import sys

# Packages whose own version is the CUDA version they belong to (nvidia-cufft 12.x, say, ships with CUDA 13: its
# version is the library's, so it is judged by name only).
CUDA_VERSIONED = {"cuda-toolkit", "cuda-bindings", "cuda-python", "nvidia-cuda-runtime", "nvidia-cuda-nvrtc",
                  "nvidia-cuda-cupti", "nvidia-nvjitlink", "nvidia-nvtx"}


def canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def cuda_line(name, version):
    suffix = re.search(r"-cu(\d\d)", name)
    if suffix:
        return suffix.group(1)
    local = re.search(r"\+cu(\d\d)", version)
    if local:
        return local.group(1)
    if name in CUDA_VERSIONED or re.fullmatch(r"nvidia-cuda-[a-z]+", name):
        return version.split(".")[0]
    return None


report, constraints = sys.argv[1:3]
pins = {}
for line in open(constraints):
    requirement = line.split("#")[0].strip()
    if "==" in requirement:
        name, version = requirement.split("==")
        pins[canonical(name)] = version.strip()

installs = json.load(open(report))["install"]
unpinned, lines = [], {}
for item in sorted(installs, key=lambda i: canonical(i["metadata"]["name"])):
    name, version = canonical(item["metadata"]["name"]), item["metadata"]["version"]
    line = cuda_line(name, version)
    if line:
        lines.setdefault(line, []).append(name)
    if item["download_info"].get("dir_info") is not None:
        status = "the project"
    elif pins.get(name) == version:
        status = "pinned"
    else:
        status = f"NOT PINNED (constraints.txt: {pins.get(name, 'absent')})"
        unpinned.append(f"{name}=={version}")
    print(f"  {name:32} {version:16} {status}" + (f"  cuda {line}" if line else ""))

print(f"check-image: {len(installs)} packages; CUDA lines: " + (", ".join(sorted(lines)) or "none"))
failures = []
if len(lines) > 1:
    failures.append("two CUDA lines: " + "; ".join(f"{k}: {', '.join(v)}" for k, v in sorted(lines.items())))
if unpinned:
    failures.append("not pinned by constraints.txt: " + ", ".join(unpinned))
for failure in failures:
    print(f"check-image: FAILED: {failure}", file=sys.stderr)
if not failures:
    print("check-image: OK: one CUDA line, every package pinned")
sys.exit(1 if failures else 0)
PY
