#!/usr/bin/env bash
# make demo: a token issued end to end on the embedded defaults.
#
# A coordinator on SQLite and an agent run on this machine against the local RabbitMQ, with
# SoftHSM2 standing in for the USB token (a blank one, as a new token arrives). A help-desk
# operator queues the token for a holder, an approver approves, and the agent initialises
# the token, generates the key on it, sends the CSR, writes the certificate back and
# reports. Then the job's timeline, the token as OpenSC's pkcs11-tool sees it, the
# certificate checked by openssl against the coordinator's CA, and the one-time user PIN.
# Everything it starts is stopped at the end; each run uses a fresh directory and vhost.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
# TOKENFLEET_BIN: where the binaries are (make demo builds them into bin/; the e2e test
# that runs this script, into its own directory).
bin="${TOKENFLEET_BIN:-$top/bin}"
module=/usr/lib/softhsm/libsofthsm2.so

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
die() { echo "demo: $*" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/tokenfleet-demo.XXXXXX")
pids=()
vhost=""
cleanup() {
  local status=$?
  for pid in "${pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  if [ -n "$vhost" ]; then
    rabbitmqctl -q delete_vhost "$vhost" >/dev/null 2>&1 || true
  fi
  if [ $status -ne 0 ]; then
    echo "demo: failed; logs are in $work (coordinator.log, agent.log)" >&2
  else
    echo "demo: done; its files are in $work"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A broker vhost of the demo's own, so that nothing of another run (or of anything else on
# this broker) is seen or touched. Without rabbitmqctl rights, the default vhost is used.
broker="amqp://guest:guest@127.0.0.1:5672/"
if rabbitmqctl -q add_vhost "tokenfleet-demo-$$" >/dev/null 2>&1; then
  vhost="tokenfleet-demo-$$"
  rabbitmqctl -q set_permissions -p "$vhost" guest '.*' '.*' '.*' >/dev/null
  broker="amqp://guest:guest@127.0.0.1:5672/$vhost"
fi

# SoftHSM2 with a private token directory: one blank token, like a new USB token.
mkdir -p "$work/tokens"
cat >"$work/softhsm2.conf" <<EOF
directories.tokendir = $work/tokens
objectstore.backend = file
log.level = ERROR
EOF
export SOFTHSM2_CONF="$work/softhsm2.conf"

# A free port for the API.
port=""
for p in $(seq 18443 18543); do
  if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then port=$p; break; fi
done
[ -n "$port" ] || die "no free port between 18443 and 18543"
url="http://127.0.0.1:$port"

say "Starting the coordinator (SQLite in $work/coordinator, API on $url)"
"$bin/tokenfleet-coordinator" serve --data "$work/coordinator" --listen "127.0.0.1:$port" \
  --broker "$broker" --log-format json >"$work/coordinator.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && [ -s "$work/coordinator/admin.token" ]; then break; fi
  kill -0 "${pids[0]}" 2>/dev/null || { cat "$work/coordinator.log" >&2; die "the coordinator exited"; }
  sleep 0.1
done
export TOKENFLEET_URL="$url"
export TOKENFLEET_TOKEN_FILE="$work/coordinator/admin.token"
ctl() { "$bin/tokenfleetctl" --token-file "$TOKENFLEET_TOKEN_FILE" "$@"; }
# The token goes by the environment: issue's own --token names the target token.
as() { local tok=$1; shift; TOKENFLEET_TOKEN="$tok" "$bin/tokenfleetctl" "$@"; }

say "An administrator sets up an organisation, people and a profile"
ctl org create acme
ctl user create olga --name "Olga Operator" --org acme --role helpdesk
ctl user create arne --name "Arne Approver" --org acme --role approver
ctl user create alice --name "Alice Holder" --org acme --email alice@acme.example --upn alice@acme.example
olga=$(ctl user token olga --name demo)
arne=$(ctl user token arne --name demo)
ctl profile apply "$top/examples/profiles/smartcard-logon.yaml"
ctl agent add demo-ws --hostname "$(hostname)"

say "Starting the agent on this workstation (SoftHSM2 as the token)"
"$bin/tokenfleet-agent" run --id demo-ws --broker "$broker" --module "$module" \
  --data "$work/agent" --log-format json >"$work/agent.log" 2>&1 &
pids+=($!)

say "Olga (help desk) queues a smart-card logon token for Alice"
job=$(as "$olga" issue --holder alice --agent demo-ws --profile smartcard-logon)
echo "job $job"
if as "$olga" approve "$job" 2>"$work/self-approval.txt"; then die "the requester's own approval was accepted"; fi
echo "Olga's own approval is refused: $(cat "$work/self-approval.txt")"

say "Arne (approver, same organisation) approves"
as "$arne" approve "$job" --reason "checked Alice's request"

say "Progress, live"
as "$olga" job watch "$job" --interval 300ms --timeout 3m

say "The job's timeline"
as "$olga" job show "$job"

say "The token, as OpenSC's pkcs11-tool sees it"
label=$(pkcs11-tool --module "$module" -L 2>/dev/null | sed -n 's/^ *token label *: *//p' | grep -v '^$' | head -n1)
[ -n "$label" ] || die "no initialised token found by pkcs11-tool"
pin=$(as "$olga" job pin "$job")
pkcs11-tool --module "$module" --token-label "$label" --login --pin "$pin" --list-objects

say "The certificate, checked by openssl against the coordinator's CA"
ctl ca cert >"$work/ca.pem"
id=$(pkcs11-tool --module "$module" --token-label "$label" --list-objects --type cert 2>/dev/null |
  sed -n 's/^ *ID: *//p' | head -n1)
pkcs11-tool --module "$module" --token-label "$label" --read-object --type cert --id "$id" -o "$work/cert.der" >/dev/null 2>&1
openssl x509 -inform DER -in "$work/cert.der" -out "$work/cert.pem"
openssl x509 -in "$work/cert.pem" -noout -subject -issuer -enddate -ext subjectAltName
openssl verify -CAfile "$work/ca.pem" "$work/cert.pem"

say "Alice's user PIN, shown this once (a second 'tokenfleetctl job pin' is refused)"
echo "$pin"
if as "$olga" job pin "$job" >/dev/null 2>&1; then die "the PIN was revealed twice"; fi
