#!/usr/bin/env bash
# Everything the benchmarks need beyond the package itself, on a Debian/Ubuntu machine:
#   - the `bench` extra (SciPy, scikit-learn, pyinfluence, torch: the peers and baselines);
#   - Fashion-MNIST in MNIST's IDX format, Debian's `dataset-fashion-mnist` (MIT licence), which
#     `uw.load_fashion_mnist` reads from /usr/share/datasets/fashion-mnist (W4,
#     bench/w4_networks.py). Installed only when missing; apt needs root (sudo is used if present).
# Usage, from the repository root:  bash bench/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
pip install '.[bench,plot]'
dir=/usr/share/datasets/fashion-mnist
if [ ! -e "$dir/train-images-idx3-ubyte.gz" ] && [ ! -e "$dir/train-images-idx3-ubyte" ]; then
    sudo=""
    if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
    $sudo apt-get update
    $sudo apt-get install -y dataset-fashion-mnist
fi
python -c "import upweight as uw; X, y = uw.load_fashion_mnist('train'); print('Fashion-MNIST:', X.shape, 'ok')"
