# A throw-away PostgreSQL server for the database tests (issue 19), on 127.0.0.1 only.
#
# Sourced by .ci/run:   . .ci/postgres.sh && pg_start && add_exit_trap pg_stop
#   pg_start  initdb into a new temporary folder as an unprivileged user (root runs it as
#             `postgres`, else `nobody`), a random password, start it on a free port of 127.0.0.1
#             (its socket in that folder too), export STOCKSTOCK_TEST_PG_URL and
#             STOCKSTOCK_TEST_PG_REQUIRED=1 (tests/conftest.py then fails a run whose PostgreSQL
#             tests were skipped)
#   pg_stop   stop it (fast shutdown, else its postmaster's pid) and remove the folder; idempotent
# By hand, for development:
#   bash .ci/postgres.sh start       prints the export line and the folder
#   bash .ci/postgres.sh stop DIR
# The server is for tests only: fsync and synchronous commit are off (nothing here must survive
# a crash of the machine, and the suite's many small transactions run several times faster).

PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}

_pg_as() {   # run as the folder's unprivileged owner
  if [ "$(id -u)" = 0 ]; then runuser -u "$PG_USER" -- "$@"; else "$@"; fi
}

pg_start() {
  if [ ! -x "$PG_BIN/initdb" ]; then echo "no PostgreSQL (initdb) under /usr/lib/postgresql" >&2; return 1; fi
  PG_USER=$(id -un); [ "$(id -u)" = 0 ] && { id postgres >/dev/null 2>&1 && PG_USER=postgres || PG_USER=nobody; }
  PG_DIR=$(mktemp -d /tmp/stockstock-pg.XXXXXX)
  local port password
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  password=$(python3 -c 'import secrets; print(secrets.token_urlsafe(18))')
  printf '%s\n' "$password" > "$PG_DIR/password"
  [ "$(id -u)" = 0 ] && chown -R "$PG_USER" "$PG_DIR"
  _pg_as "$PG_BIN/initdb" -D "$PG_DIR/data" -U stockstock --auth=scram-sha-256 \
    --pwfile="$PG_DIR/password" -E UTF8 --no-locale > "$PG_DIR/initdb.log" 2>&1 \
    || { cat "$PG_DIR/initdb.log" >&2; return 1; }
  rm -f "$PG_DIR/password"
  _pg_as "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 -o \
    "-c listen_addresses=127.0.0.1 -p $port -k $PG_DIR -c max_connections=300 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
    start > /dev/null || { cat "$PG_DIR/server.log" >&2; return 1; }
  export STOCKSTOCK_TEST_PG_URL="postgresql+psycopg://stockstock:$password@127.0.0.1:$port/postgres"
  export STOCKSTOCK_TEST_PG_REQUIRED=1
  echo "PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$port, data in $PG_DIR"
}

pg_stop() {
  [ -n "${PG_DIR:-}" ] && [ -d "$PG_DIR/data" ] || return 0
  PG_USER=${PG_USER:-$(stat -c %U "$PG_DIR/data")}
  if ! _pg_as "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w -t 30 stop > /dev/null 2>&1; then
    local pid; pid=$(head -1 "$PG_DIR/data/postmaster.pid" 2>/dev/null)
    [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null
  fi
  rm -rf "$PG_DIR"
  echo "PostgreSQL stopped, $PG_DIR removed"
  unset PG_DIR
}

# run "$1" when the script exits (also on failure), after what already runs then: blocks of
# .ci/run that need their own clean-up add theirs the same way instead of replacing the trap
declare -F add_exit_trap > /dev/null || add_exit_trap() {
  local previous; previous=$(trap -p EXIT | sed -E "s/^trap -- '(.*)' EXIT$/\1/")
  trap "${previous:+$previous; }$1" EXIT
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  case "${1:-}" in
    start) pg_start > /dev/null && echo "export STOCKSTOCK_TEST_PG_URL='$STOCKSTOCK_TEST_PG_URL'  # stop: bash .ci/postgres.sh stop $PG_DIR" ;;
    stop) PG_DIR=${2:?the folder pg_start printed} pg_stop ;;
    *) echo "usage: bash .ci/postgres.sh start | stop DIR" >&2; exit 2 ;;
  esac
fi
