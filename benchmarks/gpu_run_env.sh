# Sourced by the GPU run scripts (cmd_gpu.sh, nrd_gpu.sh) after `cd` to the repository root: unbuffered output,
# no display, and noisykd importable without downloads (a GPU image has torch, numpy, typer, ... but no network):
# installed as it is where it is (CI), else an editable install without dependencies, else PYTHONPATH.
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
if ! python3 -c "import noisykd" 2>/dev/null; then
  python3 -m pip install -q --no-deps --no-build-isolation -e . 2>/dev/null \
    || export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
fi

# build_cifar10 DATA: CIFAR-10 in its official layout from DATA/cifar10's JPEG tarball (gpu_check.sh --fill);
# prints the folder to pass as --cifar-root
build_cifar10() {
  local root
  root="$(mktemp -d)/c10"
  python3 "$1/cifar10/build_cifar10.py" "$root" >/dev/null || return 1
  echo "$root"
}
