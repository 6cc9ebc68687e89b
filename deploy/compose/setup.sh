#!/bin/sh
# Makes everything the local try-out needs and that must not be committed: a simulated account with
# a fresh AppSecret, the OAuth state secret, a client key and an admin key, the simulator's world
# and the hubs' configuration. Idempotent: an existing DIR is left as it is.
#
#   DIR=/run/wxhub SIM_URL=http://sim:9780 WXHUB=/usr/local/bin/wxhub sh setup.sh
#
# compose.yaml runs it once in the `setup` service; .ci/ecosystem runs it with a temporary DIR.
set -eu
DIR=${DIR:-/run/wxhub}
SIM_URL=${SIM_URL:-http://sim:9780}
WXHUB=${WXHUB:-wxhub}
umask 077

if [ -f "$DIR/wxhub.toml" ]; then
  echo "setup: $DIR already set up; remove the volume to start over"
  exit 0
fi
mkdir -p "$DIR"

hex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }
# `wxhub key` prints the key on its first line and key_sha256 = "…" in the config lines.
key_line() { "$WXHUB" key | sed -n "$1"; }

APPID="wx$(hex 8)"
hex 16 > "$DIR/appsecret"
hex 32 > "$DIR/state_secret"
CLIENT=$("$WXHUB" key)
ADMIN=$("$WXHUB" key)
client_key=$(printf '%s\n' "$CLIENT" | sed -n 's/^client key[^:]*: //p')
client_sha=$(printf '%s\n' "$CLIENT" | sed -n 's/^key_sha256 = "\(.*\)"$/\1/p')
admin_key=$(printf '%s\n' "$ADMIN" | sed -n 's/^client key[^:]*: //p')
admin_sha=$(printf '%s\n' "$ADMIN" | sed -n 's/^key_sha256 = "\(.*\)"$/\1/p')
[ -n "$client_key" ] && [ -n "$client_sha" ] && [ -n "$admin_sha" ] || {
  echo "setup: could not read the keys from \`$WXHUB key\`" >&2
  exit 1
}
printf '%s\n' "$client_key" > "$DIR/client.key"
printf '%s\n' "$admin_key" > "$DIR/admin.key"

cat > "$DIR/world.toml" <<TOML
# The simulated platform for the local try-out (wall clock).
[[accounts]]
appid = "$APPID"
secret = "$(cat "$DIR/appsecret")"
name = "wxhub try-out"
oauth_domains = ["127.0.0.1", "localhost"]

[[people]]
id = "alice"
nickname = "Alice"
follows = ["$APPID"]
TOML

cat > "$DIR/wxhub.toml" <<TOML
# Three instances, one Redis (docs/operations.md). Secrets come from files in this directory and
# the Redis URL from WXHUB_REDIS_URL.
listen = "0.0.0.0:8780"
admin_key_sha256 = "$admin_sha"

[store]
kind = "redis"
url_env = "WXHUB_REDIS_URL"
prefix = "wxhub"

[upstream]
api_base = "$SIM_URL"
open_base = "$SIM_URL"

[oauth]
state_secret_file = "$DIR/state_secret"

[[accounts]]
appid = "$APPID"
secret_file = "$DIR/appsecret"
token_mode = "stable"
tickets = ["jsapi"]
jssdk_domains = ["127.0.0.1", "localhost"]

[[clients]]
name = "try-out"
key_sha256 = "$client_sha"
apps = ["*"]
TOML

echo "setup: account $APPID; keys in $DIR/client.key and $DIR/admin.key"
