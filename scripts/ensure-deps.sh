#!/usr/bin/env bash
# Makes sure what tokenfleet's build, tests and demo need is installed and running.
# Installs missing Debian packages when it can (root + apt-get), starts stopped services,
# and otherwise stops with the exact command to run. Idempotent: cheap when all is there.
set -euo pipefail

# --lint: also what `make lint` runs (node and npm for the OpenAPI linter).
# --browser: also what the browser tests need (Chromium, and axe-core through npm).
lint=0
browser=0
for arg in "$@"; do
  case "$arg" in
    --lint) lint=1 ;;
    --browser) browser=1 ;;
    *) echo "ensure-deps: unknown option $arg (known: --lint, --browser)" >&2; exit 2 ;;
  esac
done

need_pkgs=()
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

# Build and token tooling.
for p in gcc libc6-dev pkg-config libusb-1.0-0-dev softhsm2 opensc openssl sqlite3 gcc-mingw-w64-x86-64; do
  have_pkg "$p" || need_pkgs+=("$p")
done
if [ "$lint" = 1 ] || [ "$browser" = 1 ]; then
  command -v npm >/dev/null 2>&1 || need_pkgs+=(nodejs npm)
fi
# The console's browser tests drive Debian's Chromium (e2e/browser_test.go).
if [ "$browser" = 1 ]; then
  have_pkg chromium || need_pkgs+=(chromium)
fi
# Broker and database (used by the coordinator, agent and their tests).
if [ "${TOKENFLEET_SKIP_SERVICES:-}" != "1" ]; then
  command -v rabbitmq-server >/dev/null 2>&1 || need_pkgs+=(rabbitmq-server)
  command -v pg_ctlcluster >/dev/null 2>&1 || need_pkgs+=(postgresql)
  command -v curl >/dev/null 2>&1 || need_pkgs+=(curl) # asks the broker's management API
fi

if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "ensure-deps: installing ${need_pkgs[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
  else
    echo "ensure-deps: missing packages: ${need_pkgs[*]}" >&2
    echo "ensure-deps: install them with:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends ${need_pkgs[*]}" >&2
    exit 1
  fi
fi

# promtool checks the metrics' names and the example alert rules (make lint, the metrics
# tests). Only the tool is taken from Debian's prometheus package: installing the package
# would also install, and on most systems start, a Prometheus server.
if ! command -v promtool >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "ensure-deps: installing promtool (taken from the Debian package prometheus) in /usr/local/bin" >&2
    tmp=$(mktemp -d)
    if ! (cd "$tmp" && apt-get download -qq prometheus >/dev/null 2>&1); then
      apt-get update -qq >/dev/null
      (cd "$tmp" && apt-get download -qq prometheus >/dev/null 2>&1)
    fi
    dpkg-deb --fsys-tarfile "$tmp"/prometheus_*.deb | tar -x -C "$tmp" ./usr/bin/promtool
    install -m 0755 "$tmp/usr/bin/promtool" /usr/local/bin/promtool
    rm -rf "$tmp"
  else
    echo "ensure-deps: promtool is missing; install it with:" >&2
    echo "  sudo apt-get install -y --no-install-recommends prometheus && sudo systemctl disable --now prometheus" >&2
    echo "  (or put promtool from https://prometheus.io/download/ on PATH)" >&2
    exit 1
  fi
fi

if ! command -v go >/dev/null 2>&1; then
  echo "ensure-deps: Go is not on PATH; install Go 1.26 or newer (https://go.dev/dl) and retry" >&2
  exit 1
fi

# Redocly CLI, pinned, into .tools/ (scripts/ensure-redocly.sh).
if [ "$lint" = 1 ]; then
  bash "$(dirname "$0")/ensure-redocly.sh" >/dev/null
fi

# axe-core, pinned in e2e/browser/package-lock.json, into e2e/browser/node_modules, where
# the browser tests read it; again when the lock file changed since.
if [ "$browser" = 1 ]; then
  axe_dir="$(cd "$(dirname "$0")/../e2e/browser" && pwd)"
  if [ ! -f "$axe_dir/node_modules/axe-core/axe.min.js" ] ||
     [ "$axe_dir/package-lock.json" -nt "$axe_dir/node_modules/.package-lock.json" ]; then
    echo "ensure-deps: installing axe-core into e2e/browser/node_modules (npm ci)" >&2
    if ! (cd "$axe_dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null); then
      echo "ensure-deps: npm ci failed; run it yourself: (cd e2e/browser && npm ci --ignore-scripts)" >&2
      exit 1
    fi
  fi
fi

[ "${TOKENFLEET_SKIP_SERVICES:-}" = "1" ] && exit 0

# RabbitMQ on 127.0.0.1:5672.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if ! port_open 5672; then
  if [ "$(id -u)" = 0 ]; then
    echo "ensure-deps: starting RabbitMQ" >&2
    rabbitmq-server -detached >/dev/null 2>&1 || true
    for _ in $(seq 1 60); do
      rabbitmqctl await_startup >/dev/null 2>&1 && break
      sleep 1
    done
  fi
  if ! port_open 5672; then
    echo "ensure-deps: RabbitMQ is not listening on 127.0.0.1:5672; start it with: sudo rabbitmq-server -detached" >&2
    exit 1
  fi
fi

# RabbitMQ's management HTTP API on 127.0.0.1:15672: tests create their vhosts and users
# through it (rabbitmqctl costs ~2 s a call). Enabling the plugin works offline.
mgmt_up() { curl -fsS -u guest:guest -o /dev/null http://127.0.0.1:15672/api/overview 2>/dev/null; }
if ! mgmt_up; then
  if [ "$(id -u)" = 0 ]; then
    echo "ensure-deps: enabling RabbitMQ's management plugin" >&2
    rabbitmq-plugins enable rabbitmq_management >/dev/null 2>&1 || true
    for _ in $(seq 1 60); do mgmt_up && break; sleep 1; done
  fi
  if ! mgmt_up; then
    echo "ensure-deps: RabbitMQ's management API does not answer on 127.0.0.1:15672 (guest/guest);" >&2
    echo "ensure-deps: enable it with: sudo rabbitmq-plugins enable rabbitmq_management" >&2
    exit 1
  fi
fi

# PostgreSQL on 127.0.0.1:5432.
if ! port_open 5432; then
  if [ "$(id -u)" = 0 ] && command -v pg_ctlcluster >/dev/null 2>&1; then
    ver=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n1)
    if [ -z "$ver" ]; then
      ver=$(ls /usr/lib/postgresql | sort -V | tail -n1)
      pg_createcluster "$ver" main >/dev/null
    fi
    echo "ensure-deps: starting PostgreSQL $ver" >&2
    pg_ctlcluster --skip-systemctl-redirect "$ver" main start || true
    for _ in $(seq 1 30); do port_open 5432 && break; sleep 1; done
  fi
  if ! port_open 5432; then
    echo "ensure-deps: PostgreSQL is not listening on 127.0.0.1:5432; start it with: sudo pg_ctlcluster <version> main start" >&2
    exit 1
  fi
fi

# A role for tests and the demo, allowed to create (and so drop) its own databases. Made over
# the local socket as the postgres OS user, which works with Debian's default peer auth.
pg_url="${TOKENFLEET_TEST_POSTGRES_URL:-postgres://tokenfleet:tokenfleet@127.0.0.1:5432/postgres?sslmode=disable}"
if command -v psql >/dev/null 2>&1 && ! psql "$pg_url" -Atqc 'select 1' >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && id postgres >/dev/null 2>&1; then
    runuser -u postgres -- psql -qAtc "DO \$\$BEGIN
      IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tokenfleet') THEN
        CREATE ROLE tokenfleet LOGIN CREATEDB PASSWORD 'tokenfleet';
      END IF; END\$\$;" >/dev/null
  fi
  if ! psql "$pg_url" -Atqc 'select 1' >/dev/null 2>&1; then
    echo "ensure-deps: cannot connect to PostgreSQL as $pg_url" >&2
    echo "ensure-deps: create the role with: sudo -u postgres psql -c \"CREATE ROLE tokenfleet LOGIN CREATEDB PASSWORD 'tokenfleet'\"" >&2
    echo "ensure-deps: or point TOKENFLEET_TEST_POSTGRES_URL at a role that may create databases" >&2
    exit 1
  fi
fi
