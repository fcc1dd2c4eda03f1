#!/usr/bin/env bash
# System packages the integration tests need (Debian/Ubuntu): PostgreSQL (throwaway clusters for
# the scale-out tests) and Chromium (the MLflow UI check, driven by Python playwright through
# /usr/bin/chromium, so no browser download).
#
# Idempotent and fast when everything is present: it only looks at the binaries. When something is
# missing it runs `apt-get update` once and installs what is missing, as root or through sudo.
# Without root or sudo it says so and exits 0: the tests that need these packages then skip with a
# reason instead of failing the whole run.
set -euo pipefail

missing=()

# PostgreSQL: the tests start their own cluster with initdb/pg_ctl from /usr/lib/postgresql/*/bin.
if compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null \
    && compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null; then
    echo "system-deps: postgresql present ($(ls -d /usr/lib/postgresql/*/ | xargs -n1 basename | tr "\n" " " | sed "s/ $//"))"
else
    missing+=(postgresql)
fi

# Chromium: Debian names the package `chromium`; the binary is /usr/bin/chromium.
if [ -x /usr/bin/chromium ] || command -v chromium >/dev/null 2>&1; then
    echo "system-deps: chromium present ($(command -v chromium || echo /usr/bin/chromium))"
else
    missing+=(chromium)
fi

if [ "${#missing[@]}" -eq 0 ]; then
    echo "system-deps: nothing to install"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "system-deps: missing ${missing[*]} and no apt-get here; install them with your package" \
         "manager (the tests that need them will be skipped)" >&2
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
else
    echo "system-deps: missing ${missing[*]}; installing them needs root or password-less sudo." \
         "Run: sudo apt-get install -y ${missing[*]}  (the tests that need them will be skipped)" >&2
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
echo "system-deps: installing ${missing[*]} with apt-get"
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "system-deps: installed ${missing[*]}"
