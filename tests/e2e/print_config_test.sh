#!/usr/bin/env bash
# session-broker --print-config, run as scripts/dev runs it: the real binary
# reads the environment and the .env file named by BROKER_ENV_FILE, needs no
# DATABASE_URL, connects to nothing (the database host below does not exist),
# redacts the password, and its env form evaluates back to the values.
#   print_config_test.sh PATH_TO_SESSION_BROKER
set -euo pipefail
broker=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0

expect() {  # expect DESCRIPTION COMMAND...
  local what=$1
  shift
  if ! "$@"; then
    echo "FAILED: $what" >&2
    failures=$((failures + 1))
  fi
}

cat >"$tmp/env" <<'END'
DATABASE_URL=postgresql://app:hunter2@db.invalid/app
DB_POOL_SIZE=3
BROKER_PORT_FILE="/tmp/ports of 'the' broker"
END

human=$(env -u DATABASE_URL BROKER_ENV_FILE="$tmp/env" DB_POOL_SIZE=7 "$broker" --print-config)
echo "$human"
expect "the environment wins" grep -Eq '^DB_POOL_SIZE +7 +environment$' <<<"$human"
expect "values from the file name it" grep -Eq "^DATABASE_URL +.*db\.invalid.* +$tmp/env\$" <<<"$human"
expect "the password is redacted" grep -Eq '^DATABASE_URL .*\*\*\*' <<<"$human"
expect "defaults say so" grep -Eq '^LOG_LEVEL +info +default$' <<<"$human"
expect "the password is not shown" eval '! grep -q hunter2 <<<"$human"'

env_form=$(env -u DATABASE_URL BROKER_ENV_FILE="$tmp/env" "$broker" --print-config=env)
expect "the env form evaluates back to the values" eval '
  (eval "$env_form"
   [[ $BROKER_PORT_FILE == "/tmp/ports of '"'"'the'"'"' broker" && $DB_POOL_SIZE == 3 &&
      $BROKER_LISTEN_ADDR == 127.0.0.1:50051 && $BROKER_ENV_FILE == "$tmp/env" ]])'

unset_url=$(env -u DATABASE_URL BROKER_ENV_FILE= "$broker" --print-config=env)
expect "a missing DATABASE_URL is shown as unset" grep -qx "DATABASE_URL=''" <<<"$unset_url"

rc=0
env BROKER_ENV_FILE= DB_POOL_SIZE=0 "$broker" --print-config 2>"$tmp/err" >/dev/null || rc=$?
expect "a bad value exits 2" test "$rc" -eq 2
expect "a bad value is named" grep -q "DB_POOL_SIZE='0' is not valid" "$tmp/err"

rc=0
"$broker" --no-such-flag 2>/dev/null || rc=$?
expect "an unknown argument exits 2" test "$rc" -eq 2
# Into a file first: grep -q stops reading at the match, and the broker,
# still writing, would die of SIGPIPE (a failure under pipefail).
"$broker" --help >"$tmp/help"
expect "--help lists the modes" grep -q -- --print-config=env "$tmp/help"

((failures == 0)) && echo "print_config_test: all checks passed"
exit $((failures != 0))
