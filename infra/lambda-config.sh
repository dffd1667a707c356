#!/usr/bin/env bash
# Print the config a Lambda function packs as /var/task/albra.toml: the given config (default
# config/albra.toml) with every account's keys read from SSM under /albra/<stage>/<account>/ instead of
# the environment (`key_source = "env…"` → `key_source = "ssm"`). Everything else is unchanged.
#   infra/lambda-config.sh [config/albra.toml] > albra.toml
set -euo pipefail
src="${1:-$(dirname "$0")/../config/albra.toml}"
[[ -r "$src" ]] || { echo "lambda-config.sh: cannot read $src" >&2; exit 2; }
sed -E 's/^([[:space:]]*key_source[[:space:]]*=[[:space:]]*)"env(:[A-Za-z0-9_]+)?"/\1"ssm"/' "$src"
