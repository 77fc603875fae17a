#!/usr/bin/env bash
# The local shop example end to end: a json-server API (npm json-server 0.17.4 with the
# test middlewares: OAuth2 client credentials, envelopes) on 127.0.0.1:3977, the
# rest.Downloader of its three endpoints, and the sql.Uploader into SQLite
# (~/.anchovies/<user>/warehouse.sqlite, or ACHVY_CNXN__DB__URI). SHOP_PORT and
# SHOP_DATA_DIR (default local/: db.json, server.log) move the server.
#
#   examples/rest/run.sh          (ANCHOVY_BIN=path/to/anchovy to use another build)
set -euo pipefail
cd "$(dirname "$0")"
A=${ANCHOVY_BIN:-anchovy}
PORT=${SHOP_PORT:-3977}
if [ -z "${JSON_SERVER_NODE_PATH:-}" ]; then
  # shellcheck source=script/services.sh
  source ../../script/services.sh
  install_json_server
fi
DATA=${SHOP_DATA_DIR:-local}
[ -f "$DATA/db.json" ] || python3 local/gen.py 500 "$DATA/db.json"
NODE_PATH="$JSON_SERVER_NODE_PATH" node ../../tests/rest/server.js "$DATA/db.json" --port "$PORT" > "$DATA/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q listening "$DATA/server.log" && break; sleep 0.1; done
export ACHVY_CNXN__SHOP__BASE_URL="http://127.0.0.1:$PORT" ACHVY_CNXN__SHOP__CLIENT_ID=anchovies ACHVY_CNXN__SHOP__CLIENT_SECRET=oauth-s3cret
"$A" start -op rest.Downloader --id shop -c config.yaml --compact >/dev/null
ACHVY_CNXN__DB__URI="${ACHVY_CNXN__DB__URI:-sqlite://}" "$A" start -op sql.Uploader --id shop_warehouse -U shop -c /dev/null --compact >/dev/null
echo "loaded: customers, orders, order_lines of the local shop"
