#!/usr/bin/env bash
# Build LeRobot's own virtualenv for the side-by-side benchmark (bench/peers/compare_lerobot.py).
#
# LeRobot 0.4.4 pins torch<2.11, so it cannot share dp's environment: it gets a venv of its own,
# outside the repository by default. Pinned: lerobot[pusht]==0.4.4 and the versions it resolved to
# when the published figures were measured (lerobot-constraints.txt beside this script).
#
#   bash bench/peers/setup_lerobot.sh            # venv at $DP_PEERS_LEROBOT_VENV or ~/.cache/dp-peers/lerobot
#
# PyPI's torch for Linux x86_64 is the CUDA build (several GB with its nvidia-* wheels); it runs on
# CPU. Needs Python >= 3.10 (set PYTHON to choose the interpreter).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${DP_PEERS_LEROBOT_VENV:-$HOME/.cache/dp-peers/lerobot}"
python="${PYTHON:-python3}"

"$python" -c 'import sys; assert sys.version_info >= (3, 10), "LeRobot 0.4.4 needs Python >= 3.10"'
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --upgrade "pip>=24"
# zarr: the conversion reads Diffusion Policy's replay buffer (the same zarr as dp's environment)
"$venv/bin/python" -m pip install -c "$here/lerobot-constraints.txt" "lerobot[pusht]==0.4.4" "zarr==3.1.5"
"$venv/bin/python" - <<'EOF'
import gym_pusht, lerobot, torch, zarr
print(f"LeRobot {lerobot.__version__}, torch {torch.__version__}, gym-pusht ready")
EOF
echo "LeRobot venv: $venv"
