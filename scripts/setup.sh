#!/usr/bin/env bash
# Idempotent set-up shared by `make test` and `make demo`: system packages (only
# when root, only the missing ones), the project venv (reinstalled only when a
# requirements file changes), and the staged collection tree that ansible-test
# and ansible-playbook load the collection from.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
venv=${VENV:-$root/.venv}
python=${PYTHON:-python3}
build=$root/build

install_system_packages() {
    if [ "$(id -u)" != 0 ]; then
        echo "setup: not root; skipping system packages (suites needing them will fail loudly)"
        return
    fi
    local wanted=() missing=() pkg
    mapfile -t wanted < <(sed -e 's/#.*//' tests/support/apt-packages.txt | awk 'NF {print $1}')
    for pkg in "${wanted[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || missing+=("$pkg")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "setup: installing system packages: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

# Tools of this repository with a pyproject.toml of their own (e.g. tools/delphix_sim, the
# Delphix simulator the demo and the tests run) are installed into the venv as well.
local_tools() {
    local project
    for project in tools/*/pyproject.toml; do
        [ -e "$project" ] && echo "./$(dirname "$project")"
    done
    return 0
}

install_venv() {
    local stamp=$venv/.requirements.sha256 want tools=()
    mapfile -t tools < <(local_tools)
    want=$( (cat requirements.txt requirements-postgresql.txt tests/requirements.txt
             for tool in "${tools[@]}"; do git ls-files -co --exclude-standard "$tool" | sort | xargs -r sha256sum; done
            ) | sha256sum | cut -d' ' -f1)
    if [ ! -x "$venv/bin/python" ]; then
        echo "setup: creating venv $venv"
        "$python" -m venv "$venv"
    fi
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        echo "setup: installing Python requirements into $venv"
        "$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
        "$venv/bin/python" -m pip install -q --disable-pip-version-check \
            -r requirements.txt -r requirements-postgresql.txt -r tests/requirements.txt "${tools[@]}"
        echo "$want" >"$stamp"
    fi
}

# ansible-test builds a venv per sanity test and bootstraps pip with a script it
# downloads from the internet; this machine has only package registries, so a
# stand-in that uses ensurepip + the registry takes its place (see docs/testing.md).
install_get_pip_standin() {
    local cache=$build/home/.ansible/test/cache
    mkdir -p "$cache"
    cp scripts/get_pip_standin.py "$cache/get_pip_24_2.py"
}

install_system_packages
install_venv
install_get_pip_standin
"$venv/bin/python" scripts/stage.py
