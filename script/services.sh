#!/usr/bin/env bash
# script/services.sh -- throwaway local services for integration tests (PostgreSQL, MariaDB,
# an SFTP sshd, Azurite, moto S3, json-server for REST APIs), all on 127.0.0.1. script/test starts what the tests need.
# Usage:  source script/services.sh; install_services; start_services; ...; stop_services
# Assumes: Debian 12 image, running as root (CI), PostgreSQL 15 + node/npm + python3 already present.

# What the tests need: PostgreSQL is on the image; MariaDB, OpenSSH and faketime come from Debian.
# What the other installers need first, from the distribution's packages when missing
# (needs root and apt; a no-op on a machine that has them): PostgreSQL's server (any
# major version: the newest found is used), node and npm (Azurite, json-server),
# python3-venv (moto, the Parquet and original-tool venvs), curl.
install_prerequisites() {
  local want=()
  [ -n "$(_pg_bin)" ] || want+=(postgresql)
  command -v node >/dev/null || want+=(nodejs)
  command -v npm >/dev/null || want+=(npm)
  python3 -m venv --help >/dev/null 2>&1 || want+=(python3-venv)
  command -v curl >/dev/null || want+=(curl ca-certificates)
  [ ${#want[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "script/services.sh: missing ${want[*]}; install them (this script installs them with apt-get as root)" >&2
    return 1
  fi
  echo "installing ${want[*]} (apt)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${want[@]}" >/dev/null
}

install_test_services() {
  local want=()
  [ -x /usr/sbin/mariadbd ] || want+=(mariadb-server)
  [ -x /usr/sbin/sshd ] || want+=(openssh-server openssh-sftp-server)
  command -v ssh-keyscan >/dev/null || want+=(openssh-client)
  command -v faketime >/dev/null || want+=(faketime)   # clock-skew tests (libfaketime)
  command -v groff >/dev/null || want+=(groff-base)   # the manual page test renders anchovy(1)
  [ ${#want[@]} -eq 0 ] && return 0
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${want[@]}" >/dev/null
}

install_services() {   # apt ~40 s, npm ~30 s, pip ~45 s (run the three in parallel if you like)
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends openssh-server openssh-sftp-server mariadb-server >/dev/null
  install_azurite
  install_moto
}

# --- PostgreSQL (throwaway; the newest major version installed, or PG_BIN) ---
PG_PORT=${PG_PORT:-54329}
PG_DIR=${PG_DIR:-/tmp/anchovies-pg}
_pg_bin() {
  if [ -n "${PG_BIN:-}" ]; then echo "$PG_BIN"; return; fi
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}
_as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
start_postgres() {
  rm -rf "$PG_DIR" && mkdir -p "$PG_DIR"
  [ "$(id -u)" = 0 ] && chown postgres: "$PG_DIR"
  echo postgres > "$PG_DIR/pw" && chmod 644 "$PG_DIR/pw"
  local pgb; pgb=$(_pg_bin)
  [ -n "$pgb" ] || { echo "no PostgreSQL server found (install_prerequisites installs it)" >&2; return 1; }
  _as_pg "$pgb/initdb" -D "$PG_DIR/data" -U postgres --pwfile="$PG_DIR/pw" \
      --auth=scram-sha-256 -E UTF8 --locale=C.UTF-8 --no-sync >"$PG_DIR/initdb.log" 2>&1 \
    || { cat "$PG_DIR/initdb.log"; return 1; }
  # Relaxed durability for throwaway test servers; PG_DURABLE=1 keeps PostgreSQL's
  # defaults (fsync, synchronous commit, full-page writes), as production runs.
  local relaxed="-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
  if [ "${PG_DURABLE:-}" = 1 ]; then relaxed=""; fi
  # PG_TLS=1: TLS too (plain connections still work), with a throwaway CA whose
  # certificate is exported as PG_TLS_CA (the server's names: 127.0.0.1, localhost).
  local tls=""
  if [ "${PG_TLS:-}" = 1 ]; then
    local t="$PG_DIR/tls"
    mkdir -p "$t"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout "$t/ca.key" -out "$t/ca.crt" -days 2 \
        -subj "/CN=anchovies test CA" >/dev/null 2>&1 &&
      openssl req -newkey rsa:2048 -nodes -keyout "$t/server.key" -out "$t/server.csr" \
        -subj "/CN=localhost" >/dev/null 2>&1 &&
      printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$t/ext.cnf" &&
      openssl x509 -req -in "$t/server.csr" -CA "$t/ca.crt" -CAkey "$t/ca.key" -CAcreateserial \
        -out "$t/server.crt" -days 2 -extfile "$t/ext.cnf" >/dev/null 2>&1 \
      || { echo "start_postgres: cannot make the test certificates (openssl)" >&2; return 1; }
    chmod 600 "$t/server.key" && chmod 644 "$t/ca.crt" && chmod 755 "$t"
    [ "$(id -u)" = 0 ] && chown -R postgres: "$t"
    tls="-c ssl=on -c ssl_cert_file=$t/server.crt -c ssl_key_file=$t/server.key"
    export PG_TLS_CA="$t/ca.crt"
  fi
  _as_pg "$pgb/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 30 start \
      -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PG_DIR $relaxed $tls" \
      >/dev/null || { cat "$PG_DIR/server.log"; return 1; }
  PGPASSWORD=postgres "$pgb/psql" -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres \
      -c "CREATE ROLE anchovies LOGIN PASSWORD 'anchovies'" \
      -c "CREATE DATABASE anchovies OWNER anchovies"
  export PG_URL="postgres://anchovies:anchovies@127.0.0.1:$PG_PORT/anchovies"
}
# Restarts the server with the options it was started with (pg_ctl keeps them).
restart_postgres() { local pgb; pgb=$(_pg_bin); _as_pg "$pgb/pg_ctl" -D "$PG_DIR/data" -m fast -w restart >/dev/null; }
stop_postgres() { local pgb; pgb=$(_pg_bin); _as_pg "$pgb/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null; }

# --- SFTP: second sshd on 127.0.0.1 (needs root; Debian openssh-server installed) ---
SFTP_PORT=${SFTP_PORT:-22022}
SFTP_DIR_ROOT=${SFTP_DIR_ROOT:-/tmp/anchovies-sftp}
SFTP_USER=${SFTP_USER:-anchovies}
# A new random password per start (not one anybody knows), unless one is given.
SFTP_PASSWORD=${SFTP_PASSWORD:-pw-$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')}
start_sftp() {
  local d="$SFTP_DIR_ROOT"
  rm -rf "$d" && mkdir -p "$d/home/data" "$d/keys"
  mkdir -p /run/sshd                       # privsep dir; sshd refuses to start without it
  # The login user exists only while the server runs: created here (and removed by
  # stop_sftp), or, when it was there before, unlocked here and locked again.
  if ! id -u "$SFTP_USER" >/dev/null 2>&1; then
    useradd -M -d "$d/home" -s /bin/sh "$SFTP_USER" && touch "$d/created_user"
  fi
  usermod -d "$d/home" "$SFTP_USER" >/dev/null 2>&1 || true
  echo "$SFTP_USER:$SFTP_PASSWORD" | chpasswd   # also unlocks the account ("!" in shadow blocks even key auth)
  ssh-keygen -q -t ed25519 -N '' -f "$d/keys/host_ed25519"
  ssh-keygen -q -t ed25519 -N '' -f "$d/keys/client_ed25519"
  cp "$d/keys/client_ed25519.pub" "$d/keys/authorized_keys"
  chmod 644 "$d/keys/authorized_keys"
  printf 'id,name\n1,alpha\n2,beta\n' > "$d/home/data/a.csv"
  printf 'id,name\n3,gamma\n' > "$d/home/data/b.csv"
  chown -R "$SFTP_USER": "$d/home"
  cat > "$d/sshd_config" <<CONF
Port $SFTP_PORT
ListenAddress 127.0.0.1
HostKey $d/keys/host_ed25519
PidFile $d/sshd.pid
AuthorizedKeysFile $d/keys/authorized_keys
StrictModes no
UsePAM no
PubkeyAuthentication yes
PasswordAuthentication yes
KbdInteractiveAuthentication no
PermitRootLogin no
AllowUsers $SFTP_USER
Subsystem sftp internal-sftp
ForceCommand internal-sftp
X11Forwarding no
AllowTcpForwarding no
LogLevel VERBOSE
CONF
  /usr/sbin/sshd -t -f "$d/sshd_config" || return 1
  /usr/sbin/sshd -f "$d/sshd_config" -E "$d/sshd.log" || { cat "$d/sshd.log"; return 1; }
  for _ in $(seq 50); do ssh-keyscan -p "$SFTP_PORT" -t ed25519 127.0.0.1 > "$d/known_hosts" 2>/dev/null && [ -s "$d/known_hosts" ] && break; sleep 0.1; done
  export SFTP_HOST=127.0.0.1 SFTP_PORT SFTP_USER SFTP_PASSWORD SFTP_KEY="$d/keys/client_ed25519" \
         SFTP_KNOWN_HOSTS="$d/known_hosts" SFTP_DIR="$d/home/data"
}
stop_sftp() {
  [ -f "$SFTP_DIR_ROOT/sshd.pid" ] && kill "$(cat "$SFTP_DIR_ROOT/sshd.pid")"
  if [ -f "$SFTP_DIR_ROOT/created_user" ]; then
    userdel "$SFTP_USER" >/dev/null 2>&1 && rm -f "$SFTP_DIR_ROOT/created_user"
  elif id -u "$SFTP_USER" >/dev/null 2>&1; then
    passwd -l "$SFTP_USER" >/dev/null 2>&1
  fi
  true
}

# --- Azure Blob emulator: Azurite (npm) ---
AZURITE_PREFIX=${AZURITE_PREFIX:-/tmp/anchovies-azurite}
AZURITE_PORT=${AZURITE_PORT:-10000}
AZURE_CONTAINER=${AZURE_CONTAINER:-anchovies}
install_azurite() {   # ~30 s; pin the version you tested
  [ -x "$AZURITE_PREFIX/npm/node_modules/.bin/azurite-blob" ] && return 0
  mkdir -p "$AZURITE_PREFIX/npm" && (cd "$AZURITE_PREFIX/npm" && npm install --no-audit --no-fund --loglevel=error azurite@3.35.0 >/dev/null)
}
start_azurite() {
  rm -rf "$AZURITE_PREFIX/data" && mkdir -p "$AZURITE_PREFIX/data"
  # --inMemoryPersistence cannot be combined with --location; drop it and use --location DIR to persist on disk
  (cd "$AZURITE_PREFIX/data" && exec "$AZURITE_PREFIX/npm/node_modules/.bin/azurite-blob" --blobHost 127.0.0.1 \
      --blobPort "$AZURITE_PORT" --inMemoryPersistence --skipApiVersionCheck --disableTelemetry --silent \
      > "$AZURITE_PREFIX/azurite.log" 2>&1) &
  echo $! > "$AZURITE_PREFIX/azurite.pid"
  local up=0; for _ in $(seq 150); do (exec 3<>/dev/tcp/127.0.0.1/$AZURITE_PORT) 2>/dev/null && { up=1; break; }; sleep 0.1; done
  [ $up = 1 ] || { cat "$AZURITE_PREFIX/azurite.log"; return 1; }
  azurite_create_container "$AZURE_CONTAINER"
  export AZURE_STORAGE_USE_EMULATOR=true AZURITE_BLOB_STORAGE_URL="http://127.0.0.1:$AZURITE_PORT" AZURE_CONTAINER
}
# Creates a container with a SharedKey-signed REST call (object_store cannot create containers).
azurite_create_container() {
  AZ_PORT="$AZURITE_PORT" AZ_CONTAINER="$1" node -e '
const crypto=require("crypto"),http=require("http");
const acct="devstoreaccount1",key=Buffer.from("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==","base64");
const c=process.env.AZ_CONTAINER,date=new Date().toUTCString(),ver="2021-08-06";
const sts=["PUT","","","","","","","","","","","","x-ms-date:"+date,"x-ms-version:"+ver,"/"+acct+"/"+acct+"/"+c+"\nrestype:container"].join("\n");
const sig=crypto.createHmac("sha256",key).update(sts,"utf8").digest("base64");
const req=http.request({host:"127.0.0.1",port:+process.env.AZ_PORT,method:"PUT",path:"/"+acct+"/"+c+"?restype=container",
  headers:{"x-ms-date":date,"x-ms-version":ver,"Content-Length":0,Authorization:"SharedKey "+acct+":"+sig}},
  r=>{ if(r.statusCode==201||r.statusCode==409){process.exit(0)} console.error("create container: HTTP "+r.statusCode); r.pipe(process.stderr); r.on("end",()=>process.exit(1)); });
req.on("error",e=>{console.error(e.message);process.exit(1)}); req.end();'
}
stop_azurite() { [ -f "$AZURITE_PREFIX/azurite.pid" ] && kill "$(cat "$AZURITE_PREFIX/azurite.pid")"; }

# --- S3-compatible: moto server (PyPI) ---
MOTO_PREFIX=${MOTO_PREFIX:-/tmp/anchovies-moto}
MOTO_PORT=${MOTO_PORT:-5000}
S3_BUCKET=${S3_BUCKET:-anchovies}
install_moto() {   # ~45 s
  [ -x "$MOTO_PREFIX/venv/bin/moto_server" ] && return 0
  mkdir -p "$MOTO_PREFIX" && python3 -m venv "$MOTO_PREFIX/venv" && "$MOTO_PREFIX/venv/bin/pip" install -q "moto[server]==5.2.5"
}
start_moto() {
  "$MOTO_PREFIX/venv/bin/moto_server" -H 127.0.0.1 -p "$MOTO_PORT" > "$MOTO_PREFIX/moto.log" 2>&1 &
  echo $! > "$MOTO_PREFIX/moto.pid"
  local up=0; for _ in $(seq 150); do curl -fsS -o /dev/null "http://127.0.0.1:$MOTO_PORT/moto-api/" 2>/dev/null && { up=1; break; }; sleep 0.1; done
  [ $up = 1 ] || { cat "$MOTO_PREFIX/moto.log"; return 1; }
  curl -fsS -X PUT "http://127.0.0.1:$MOTO_PORT/$S3_BUCKET" -o /dev/null   # moto does not check signatures
  export AWS_ENDPOINT="http://127.0.0.1:$MOTO_PORT" AWS_ALLOW_HTTP=true AWS_REGION=us-east-1 \
         AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_VIRTUAL_HOSTED_STYLE_REQUEST=false S3_BUCKET
}
stop_moto() { [ -f "$MOTO_PREFIX/moto.pid" ] && kill "$(cat "$MOTO_PREFIX/moto.pid")"; }

# --- DuckDB + pyarrow (PyPI), to read and write Parquet in tests ---
PARQUET_PY_PREFIX=${PARQUET_PY_PREFIX:-/tmp/anchovies-parquet-py}
# --- REST APIs: json-server 0.17.4 (npm) ---
# The REST tests start one server each (tests/rest/server.js, json-server's router behind
# auth/fault middlewares) with NODE_PATH=$JSON_SERVER_NODE_PATH.
JSON_SERVER_PREFIX=${JSON_SERVER_PREFIX:-/tmp/anchovies-json-server}
install_json_server() {   # ~15 s
  [ -f "$JSON_SERVER_PREFIX/npm/node_modules/json-server/package.json" ] \
    || { mkdir -p "$JSON_SERVER_PREFIX/npm" && (cd "$JSON_SERVER_PREFIX/npm" && npm install --no-audit --no-fund --loglevel=error json-server@0.17.4 >/dev/null); } \
    || return 1
  export JSON_SERVER_NODE_PATH="$JSON_SERVER_PREFIX/npm/node_modules"
}

install_parquet_py() {   # ~30 s
  [ -x "$PARQUET_PY_PREFIX/venv/bin/python" ] && "$PARQUET_PY_PREFIX/venv/bin/python" -c "import duckdb, pyarrow" 2>/dev/null && { export PARQUET_PYTHON="$PARQUET_PY_PREFIX/venv/bin/python"; return 0; }
  mkdir -p "$PARQUET_PY_PREFIX" && python3 -m venv "$PARQUET_PY_PREFIX/venv" \
    && "$PARQUET_PY_PREFIX/venv/bin/pip" install -q "duckdb==2.0.1" "pyarrow==26.0.1" \
    && export PARQUET_PYTHON="$PARQUET_PY_PREFIX/venv/bin/python"
}

# --- Deploy recipe validators (PyPI): the Kubernetes OpenAPI schemas of 1.37
# (kubernetes-validate) and the AWS API models (botocore) for Batch and ECS inputs ---
DEPLOY_PY_PREFIX=${DEPLOY_PY_PREFIX:-/tmp/anchovies-deploy-py}
install_deploy_validators() {   # ~10 s
  [ -x "$DEPLOY_PY_PREFIX/venv/bin/python" ] && "$DEPLOY_PY_PREFIX/venv/bin/python" -c "import kubernetes_validate, botocore" 2>/dev/null && { export DEPLOY_PYTHON="$DEPLOY_PY_PREFIX/venv/bin/python"; return 0; }
  mkdir -p "$DEPLOY_PY_PREFIX" && python3 -m venv "$DEPLOY_PY_PREFIX/venv" \
    && "$DEPLOY_PY_PREFIX/venv/bin/pip" install -q "kubernetes-validate==1.37.0" "botocore==1.44.8" \
    && export DEPLOY_PYTHON="$DEPLOY_PY_PREFIX/venv/bin/python"
}

# --- Singer taps (PyPI) that run offline, for process.Downloader's tests: tap-jsonl on
# local files and MeltanoLabs' tap-postgres on the test PostgreSQL; SINGER_BIN is their
# venv's bin directory ---
SINGER_PY_PREFIX=${SINGER_PY_PREFIX:-/tmp/anchovies-singer-py}
install_singer_taps() {   # ~40 s
  [ -x "$SINGER_PY_PREFIX/venv/bin/tap-jsonl" ] && [ -x "$SINGER_PY_PREFIX/venv/bin/tap-postgres" ] \
    && { export SINGER_BIN="$SINGER_PY_PREFIX/venv/bin"; return 0; }
  mkdir -p "$SINGER_PY_PREFIX" && python3 -m venv "$SINGER_PY_PREFIX/venv" \
    && "$SINGER_PY_PREFIX/venv/bin/pip" install -q "tap-jsonl==0.3.1" "meltanolabs-tap-postgres==0.8.3" \
    && export SINGER_BIN="$SINGER_PY_PREFIX/venv/bin"
}

# --- The original Python anchovies (../shared/reference/anchovies-py, see ORIGIN.md
# there), for the drop-in tests: installed into a venv of Python >= 3.12 with its
# dependencies pinned; ORIGINAL_ANCHOVY is its `anchovy` ---
ORIGINAL_PY_PREFIX=${ORIGINAL_PY_PREFIX:-/tmp/anchovies-original-py}
original_py_src() {
  local d
  for d in "${ORIGINAL_PY_SRC:-}" "$(pwd)/../shared/reference/anchovies-py" /work/shared/reference/anchovies-py; do
    [ -n "$d" ] && [ -f "$d/pyproject.toml" ] && { echo "$d"; return 0; }
  done
  echo "script/services.sh: the original anchovies source is not found (set ORIGINAL_PY_SRC)" >&2
  return 1
}
python312() {   # a Python >= 3.12 (the original needs it); pyenv's when the system's is older
  local c
  for c in python3.13 python3.12 "$(pyenv prefix 3.12.1 2>/dev/null)/bin/python" /root/.pyenv/versions/3.1[2-9]*/bin/python python3; do
    command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null && { echo "$c"; return 0; }
  done
  echo "script/services.sh: the original anchovies needs Python >= 3.12; none found" >&2
  return 1
}
install_original_py() {   # ~20 s
  [ -x "$ORIGINAL_PY_PREFIX/venv/bin/anchovy" ] && "$ORIGINAL_PY_PREFIX/venv/bin/python" -c "import anchovies.sdk, dataset" 2>/dev/null \
    && { export ORIGINAL_ANCHOVY="$ORIGINAL_PY_PREFIX/venv/bin/anchovy"; return 0; }
  local src py
  src=$(original_py_src) && py=$(python312) || return 1
  mkdir -p "$ORIGINAL_PY_PREFIX" && rm -rf "$ORIGINAL_PY_PREFIX/src" && cp -r "$src" "$ORIGINAL_PY_PREFIX/src" && rm -rf "$ORIGINAL_PY_PREFIX/src/build" \
    && "$py" -m venv "$ORIGINAL_PY_PREFIX/venv" \
    && "$ORIGINAL_PY_PREFIX/venv/bin/pip" install -q "$ORIGINAL_PY_PREFIX/src[sql]" "dataset==1.6.2" "SQLAlchemy==1.4.54" \
         "orjson==3.13.0" "isal==1.9.1" "click==8.5.1" "PyYAML==6.0.4" "prettytable==3.19.0" "python-dateutil==4.0.0" "pytz==2026.6" \
    && export ORIGINAL_ANCHOVY="$ORIGINAL_PY_PREFIX/venv/bin/anchovy"
}

# --- MariaDB 10.11 (Debian mariadb-server), throwaway ---
MY_PORT=${MY_PORT:-33306}
MY_DIR=${MY_DIR:-/tmp/anchovies-mariadb}
_as_my() { if [ "$(id -u)" = 0 ]; then runuser -u mysql -- "$@"; else "$@"; fi; }
# Waits (at most 30 s) until nothing listens on 127.0.0.1:PORT: a server of a run just
# before may still be shutting down (MariaDB dumps its buffer pool first).
_wait_port_free() {
  local _i; for _i in $(seq 300); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null || return 0; sleep 0.1; done
  echo "script/services.sh: port $1 on 127.0.0.1 is still in use (another server?)" >&2; return 1
}
start_mariadb() {
  stop_mariadb >/dev/null 2>&1 || true
  _wait_port_free "$MY_PORT" || return 1
  rm -rf "$MY_DIR" && mkdir -p "$MY_DIR"
  [ "$(id -u)" = 0 ] && chown mysql: "$MY_DIR"
  _as_my mariadb-install-db --no-defaults --datadir="$MY_DIR/data" --auth-root-authentication-method=socket \
      --skip-test-db --skip-name-resolve > "$MY_DIR/install.log" 2>&1 || { cat "$MY_DIR/install.log"; return 1; }
  _as_my /usr/sbin/mariadbd --no-defaults --datadir="$MY_DIR/data" --port="$MY_PORT" --bind-address=127.0.0.1 \
      --socket="$MY_DIR/mysqld.sock" --pid-file="$MY_DIR/mysqld.pid" --log-error="$MY_DIR/error.log" \
      --skip-name-resolve --skip-log-bin --innodb-buffer-pool-size=64M --innodb-log-file-size=16M \
      --innodb-flush-log-at-trx-commit=0 --innodb-doublewrite=0 --character-set-server=utf8mb4 > /dev/null 2>&1 &
  local up=0; for _ in $(seq 300); do [ -S "$MY_DIR/mysqld.sock" ] && _as_my mariadb -S "$MY_DIR/mysqld.sock" -u "$( [ "$(id -u)" = 0 ] && echo mysql || id -un)" -e 'select 1' >/dev/null 2>&1 && { up=1; break; }; sleep 0.1; done
  [ $up = 1 ] || { cat "$MY_DIR/error.log"; return 1; }
  _as_my mariadb -S "$MY_DIR/mysqld.sock" -u "$( [ "$(id -u)" = 0 ] && echo mysql || id -un)" -e "
    CREATE DATABASE anchovies; CREATE USER 'anchovies'@'%' IDENTIFIED BY 'anchovies';
    GRANT ALL ON *.* TO 'anchovies'@'%'; FLUSH PRIVILEGES;"
  export MYSQL_URL="mysql://anchovies:anchovies@127.0.0.1:$MY_PORT/anchovies"
}
stop_mariadb() { [ -f "$MY_DIR/mysqld.pid" ] && kill "$(cat "$MY_DIR/mysqld.pid")"; }

start_services() { start_postgres && start_mariadb && start_sftp && start_azurite && start_moto; }

# After the stop_* functions: waits (at most 15 s each) for the servers to exit, then
# removes their throwaway data (databases, SFTP home, Azurite's blobs, logs). The
# installed tools (npm trees and venvs, ~1 GB under /tmp/anchovies-*) stay, so the next
# run starts warm; ANCHOVIES_CLEAN=all removes them too.
clean_services_data() {
  local pidfile pid
  for pidfile in "$PG_DIR/data/postmaster.pid" "$MY_DIR/mysqld.pid" "$SFTP_DIR_ROOT/sshd.pid" \
                 "$AZURITE_PREFIX/azurite.pid" "$MOTO_PREFIX/moto.pid"; do
    [ -f "$pidfile" ] || continue
    pid=$(head -n 1 "$pidfile")
    for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  done
  rm -rf "$PG_DIR" "$MY_DIR" "$SFTP_DIR_ROOT" "$AZURITE_PREFIX/data" "$AZURITE_PREFIX"/azurite.* \
         "$MOTO_PREFIX"/moto.*
  if [ "${ANCHOVIES_CLEAN:-}" = all ]; then
    rm -rf "$AZURITE_PREFIX" "$MOTO_PREFIX" "$PARQUET_PY_PREFIX" "$JSON_SERVER_PREFIX" \
           "$DEPLOY_PY_PREFIX" "$ORIGINAL_PY_PREFIX" "$SINGER_PY_PREFIX"
  fi
}
stop_services()  { stop_moto; stop_azurite; stop_sftp; stop_mariadb; stop_postgres; true; }
