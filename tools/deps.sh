#!/bin/bash
# Install what agentd, its tests, its demo and its packages need on Debian 12
# (idempotent).
set -euo pipefail
PKGS=(python3 python3-pip python3-apsw python3-click python3-rich
      python3-systemd python3-pytest make systemd dbus passwd util-linux procps tar
      libglib2.0-bin sqlite3
      # online agents' own network namespace gets its way out through it (agentd.usernet)
      slirp4netns
      # polkit: agentd asks polkitd about its administrative actions
      # (policies/org.agentos.agentd1.policy; pkaction in the tests); xmllint
      # checks that file against polkit's DTD (tests/unit/test_introspection.py)
      polkitd libxml2-utils
      # make deb / make rpm (tests/packaging): debhelper with dh-python, their
      # linters, and man-db for `make man` (lintian's man page check too)
      debhelper dh-python dpkg-dev lintian rpm rpmlint man-db groff-base
      # agentd/inference: llama-cpp-python's dependencies (it is built from
      # source by `make vendor-llama`, hence cmake and g++)
      python3-numpy python3-jinja2 python3-typing-extensions python3-diskcache
      cmake g++
      # gguf (vendored) writes the embedding model's GGUF: numpy and yaml
      python3-yaml
      # agentctl top's test drives it under tmux; the metrics test scrapes with curl
      tmux curl
      # the Cockpit page (cockpit/agentd): Cockpit itself, and the headless
      # browser tests/integration/test_cockpit.py drives it with
      cockpit-ws cockpit-bridge cockpit-system chromium chromium-driver python3-selenium
      # node --check parses the page's script (tests/unit/test_cockpit_page.py)
      nodejs)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "deps: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
