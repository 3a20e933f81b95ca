#!/usr/bin/env bash
# Installs Redocly CLI, the OpenAPI linter `make lint` runs on coordinator/api/openapi.yaml,
# at a pinned version into .tools/redocly (git-ignored), with the machine's npm. Cheap when
# it is there. Prints the path of the redocly command.
set -euo pipefail
cd "$(dirname "$0")/.."

REDOCLY_VERSION=2.77.0 # needs Node.js 20.19 or newer
dir=.tools/redocly
bin=$dir/node_modules/.bin/redocly

if [ -x "$bin" ] && [ "$(cat "$dir/.version" 2>/dev/null)" = "$REDOCLY_VERSION" ]; then
  echo "$bin"
  exit 0
fi
if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
  echo "ensure-redocly: node and npm are needed to lint the API description;" >&2
  echo "ensure-redocly: install them with: sudo apt-get install -y nodejs npm" >&2
  exit 1
fi
if ! node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 19) ? 0 : 1)'; then
  echo "ensure-redocly: Redocly CLI $REDOCLY_VERSION needs Node.js 20.19 or newer, this is $(node --version);" >&2
  echo "ensure-redocly: install a newer nodejs package and retry" >&2
  exit 1
fi
echo "ensure-redocly: installing @redocly/cli@$REDOCLY_VERSION into $dir" >&2
mkdir -p "$dir"
npm install --prefix "$dir" --no-audit --no-fund --no-save --loglevel=error "@redocly/cli@$REDOCLY_VERSION" >&2
echo "$REDOCLY_VERSION" >"$dir/.version"
echo "$bin"
