#!/bin/sh
# Installs the LiteLLM proxy for `bench.run --peers litellm` in its own virtualenv, var/peers/litellm:
# never in the project's .venv (its dependency tree is large and pins its own versions).
#
# Pinned to 1.108.7: the newest release whose `proxy` extra installs on Python 3.11 from the
# package index (litellm requires >=3.10,<3.16). Later ones (1.108.8 to 1.110.2) name companion
# packages at versions the index does not serve (litellm-enterprise 0.1.79.post2, a
# litellm-proxy-extras newer than 0.4.110, litellm-proxy), so their extra cannot be resolved.
# The releases withdrawn after the March 2026 account compromise (1.82.7, 1.82.8) are older than
# the pin and no longer served; the script still refuses a tree that ships a litellm .pth
# start-up hook, the mechanism one of them used.
set -eu
cd "$(dirname "$0")/../.."
VERSION=1.108.7
python3.11 -m venv var/peers/litellm
var/peers/litellm/bin/pip install --quiet --disable-pip-version-check "litellm[proxy]==$VERSION"
if ls var/peers/litellm/lib/python3.11/site-packages/ | grep -i 'litellm.*\.pth$'; then
    echo "unexpected .pth start-up hook in the LiteLLM install: remove var/peers/litellm" >&2
    exit 1
fi
LITELLM_LOCAL_MODEL_COST_MAP=True var/peers/litellm/bin/litellm --version
