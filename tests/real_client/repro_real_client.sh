#!/usr/bin/env bash
# What a real MCP client sees, against a freshly booted northstar.
#
#   bash tests/real_client/repro_real_client.sh        (from any directory; `make real-client`)
#
# Boots `northstar serve` on a free loopback port with a fresh data directory (the default
# settings: every HTTP request needs a credential), waits for /health, checks the bootstrap
# admin key it wrote to <data>/admin.key (0600) and uses it as an operator would:
#   * driver.py (the official Python SDK's clients only, no northstar imports) over stdio,
#     legacy SSE and Streamable HTTP (2025-11-25 sessions and the 2026-07-28 era):
#     handshake, tools/list, echo__ping, media_v2__create_asset denied with
#     firearm_required, the firearm granted (REST with the admin key / `northstar firearms
#     grant`), the call allowed, the asset read back; each HTTP client sends a key of its own,
#     minted with the admin key;
#   * the MCP Inspector CLI (@modelcontextprotocol/inspector, installed once into
#     ${XDG_CACHE_HOME:-$HOME/.cache}/northstar-inspector/<version>) over Streamable HTTP
#     (both eras), SSE and stdio: tools/list and tools/call echo__ping, over HTTP with
#     `--header "Authorization: Bearer <key>"`. Without node/npm, or when the install fails, it
#     prints `SKIP inspector: <reason>`.
# Prints one `PASS|FAIL|SKIP <step>[: reason]` line per step on stdout (commentary goes to
# stderr), then `N passed, N failed, N skipped`; exits 1 if any step failed. The gateway is
# stopped with SIGTERM and the temporary directory removed on every exit path.
#
# Settings (environment): NORTHSTAR_RC_TIMEOUT_S (bound of the whole script, default 360),
# NORTHSTAR_INSPECTOR_VERSION (default 2.12.0), NORTHSTAR_INSPECTOR_CACHE (cache root),
# NORTHSTAR_RC_SKIP_INSPECTOR=1 (skip the Inspector), NORTHSTAR_RC_STRICT=1 (a known
# client-side issue is a FAIL instead of a SKIP).
set -euo pipefail

SCRIPT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
HERE="$(dirname "$SCRIPT")"
REPO="$(cd "$HERE/../.." && pwd)"

RC_TIMEOUT_S="${NORTHSTAR_RC_TIMEOUT_S:-360}"
DEADLINE=$((SECONDS + RC_TIMEOUT_S))  # every bounded step ends by then; cleanup adds at most ~20 s
INSPECTOR_VERSION="${NORTHSTAR_INSPECTOR_VERSION:-2.12.0}"
INSPECTOR_ROOT="${NORTHSTAR_INSPECTOR_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/northstar-inspector}"
SKIP_INSPECTOR="${NORTHSTAR_RC_SKIP_INSPECTOR:-}"
STRICT="${NORTHSTAR_RC_STRICT:-}"

# The gateway must see only what this script sets (an exported NORTHSTAR_AUTH_MODE=api_key
# in the caller's shell would otherwise change every answer).
while IFS= read -r name; do unset "$name"; done < <(compgen -e | grep '^NORTHSTAR_' || true)

if [[ -x "$REPO/.venv/bin/python" ]]; then PY="$REPO/.venv/bin/python"; else PY="$(command -v python3)"; fi
TMP="$(mktemp -d "${TMPDIR:-/tmp}/northstar-rc.XXXXXX")"
DATA="$TMP/data"
RESULTS="$TMP/results"
GW_PID=""
SUMMARY_DONE=""
mkdir -p "$DATA" "$TMP/home"
: >"$RESULTS"

note() { echo "# $*" >&2; }
bounded() {  # SECONDS CMD...: run CMD, killed after SECONDS or at the script's deadline (timeout(1))
    local secs="$1" left=$((DEADLINE - SECONDS))
    shift
    if ((left < 1)); then echo "the $RC_TIMEOUT_S s bound of the whole script is used up" >&2; return 124; fi
    ((secs > left)) && secs=$left
    if command -v timeout >/dev/null 2>&1; then timeout --kill-after=5 "$secs" "$@"; else "$@"; fi
}
record() { echo "$1" | tee -a "$RESULTS"; }
pass() { record "PASS $1"; }
fail() { record "FAIL $1: $(printf '%s' "$2" | tr '\n' ' ' | cut -c1-400)"; }
skip() { record "SKIP $1: $(printf '%s' "$2" | tr '\n' ' ' | cut -c1-400)"; }
count() { grep -c "^$1 " "$RESULTS" || true; }

summary() {
    [[ -n "$SUMMARY_DONE" ]] && return 0
    SUMMARY_DONE=1
    echo "$(count PASS) passed, $(count FAIL) failed, $(count SKIP) skipped"
}

stop_gateway() {  # [quiet]: on an aborted run only make sure it is gone
    [[ -z "$GW_PID" ]] && return 0
    local pid="$GW_PID" code=0 quiet="${1:-}"
    GW_PID=""
    if ! kill -0 "$pid" 2>/dev/null; then
        wait "$pid" 2>/dev/null || code=$?
        [[ -z "$quiet" ]] && fail gateway/stop "the gateway had already exited (code $code)"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        fail gateway/stop "still running 20 s after SIGTERM; killed"
        return 0
    fi
    wait "$pid" 2>/dev/null || code=$?
    [[ -n "$quiet" ]] && return 0
    if [[ "$code" == 0 ]]; then pass gateway/stop; else fail gateway/stop "exited $code after SIGTERM"; fi
}

on_exit() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -z "$SUMMARY_DONE" && "$rc" != 0 && "$(count FAIL)" == 0 ]]; then
        fail script "aborted with exit code $rc"
    fi
    stop_gateway quiet
    if [[ "$(count FAIL)" != 0 && -f "$TMP/gateway.log" ]]; then
        note "last lines of the gateway log:"
        tail -n 30 "$TMP/gateway.log" >&2 || true
    fi
    summary
    local failed
    failed="$(count FAIL)"
    rm -rf "$TMP"
    if [[ "$failed" != 0 ]]; then exit 1; fi
    exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

http_get() {  # URL -> body on stdout, non-zero when unreachable or not 2xx; bounded to 3 s
    if command -v curl >/dev/null 2>&1; then
        curl -fsS --max-time 3 "$1"
    else
        "$PY" -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=3).read().decode())' "$1"
    fi
}

# -- 1. boot the gateway -----------------------------------------------------------------------
PORT="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
URL="http://127.0.0.1:$PORT"
note "python: $PY; gateway: $URL; data: $DATA"
(cd "$TMP" && exec env PYTHONUNBUFFERED=1 "$PY" -m northstar serve --host 127.0.0.1 --port "$PORT" \
    --data-dir "$DATA" >"$TMP/gateway.log" 2>&1) &
GW_PID=$!

boot_error="no answer from $URL/health within 60 s"
for _ in $(seq 1 120); do
    ((SECONDS < DEADLINE)) || break
    if ! kill -0 "$GW_PID" 2>/dev/null; then boot_error="the gateway exited during start-up"; break; fi
    if body="$(http_get "$URL/health" 2>/dev/null)"; then
        if [[ "$body" == *'"status":"ok"'* ]]; then boot_error=""; else boot_error="/health answered $body"; fi
        break
    fi
    sleep 0.5
done
if [[ -n "$boot_error" ]]; then
    fail gateway/boot "$boot_error"
    exit 1
fi
pass gateway/boot

# The one credential a fresh gateway hands out: its bootstrap admin key, private to its owner.
if [[ -f "$DATA/admin.key" && "$(stat -c %a "$DATA/admin.key" 2>/dev/null || stat -f %Lp "$DATA/admin.key")" == 600 ]] \
        && grep -q "admin key: $DATA/admin.key" "$TMP/gateway.log" && ! grep -qF "$(cat "$DATA/admin.key")" "$TMP/gateway.log"; then
    pass gateway/admin-key
else
    fail gateway/admin-key "no 0600 $DATA/admin.key announced (and kept out of the log) by the gateway"
fi

# -- 2. the official Python SDK's clients over every door --------------------------------------
set +e
bounded 300 "$PY" "$HERE/driver.py" --url "$URL" --data-dir "$DATA" --python "$PY" \
    2>"$TMP/driver.err" | tee -a "$RESULTS"
driver_rc=${PIPESTATUS[0]}
set -e
if [[ "$driver_rc" != 0 ]]; then
    note "driver stderr:"; tail -n 20 "$TMP/driver.err" >&2 || true
    if [[ "$driver_rc" != 1 || "$(count FAIL)" == 0 ]]; then
        if [[ "$driver_rc" == 124 ]]; then why="timed out (its 300 s or the script's bound)"; else why="exited $driver_rc"; fi
        last="$(tail -n 1 "$TMP/driver.err" 2>/dev/null || true)"
        fail driver "$why${last:+: $last}"
    fi
fi

# -- 3. the MCP Inspector CLI ------------------------------------------------------------------
NODE=""
INSPECTOR=""

inspector_setup() {  # sets NODE and INSPECTOR, or prints why not and returns 1
    local dir="$INSPECTOR_ROOT/$INSPECTOR_VERSION" log="$TMP/npm-install.log"
    if [[ -n "$SKIP_INSPECTOR" ]]; then echo "NORTHSTAR_RC_SKIP_INSPECTOR is set"; return 1; fi
    if [[ ! -f "$dir/.northstar-installed" ]]; then
        if ! command -v npm >/dev/null 2>&1; then echo "npm not found (install node >= 20 and npm to run the Inspector)"; return 1; fi
        mkdir -p "$dir"
        note "installing @modelcontextprotocol/inspector@$INSPECTOR_VERSION and node@22 into $dir (once)"
        local started=$SECONDS
        if ! (cd "$dir" && bounded 240 npm install --prefix "$dir" --no-audit --no-fund \
                --loglevel=error "@modelcontextprotocol/inspector@$INSPECTOR_VERSION" node@22 >"$log" 2>&1); then
            echo "npm install of @modelcontextprotocol/inspector@$INSPECTOR_VERSION node@22 failed: $(tail -n 3 "$log" | tr '\n' ' ')"
            return 1
        fi
        note "installed in $((SECONDS - started)) s"
        touch "$dir/.northstar-installed"
    fi
    INSPECTOR="$dir/node_modules/@modelcontextprotocol/inspector/clients/launcher/build/index.js"
    if [[ ! -f "$INSPECTOR" ]]; then echo "the Inspector launcher is missing from $dir (remove it to reinstall)"; return 1; fi
    if [[ -x "$dir/node_modules/.bin/node" ]]; then
        NODE="$dir/node_modules/.bin/node"
    elif command -v node >/dev/null 2>&1 \
            && node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 22 || (a === 22 && b >= 19) ? 0 : 1)'; then
        NODE="$(command -v node)"
    else
        echo "no node >= 22.19 (the Inspector $INSPECTOR_VERSION needs it; node@22 did not install under $dir)"; return 1
    fi
    return 0
}

inspector_run() {  # STEP KIND ARGS... : run the Inspector CLI and judge its output
    local step="$1" kind="$2" code=0 verdict vcode=0
    shift 2
    (cd "$TMP" && bounded 60 env HOME="$TMP/home" "$NODE" "$INSPECTOR" --cli --format json -q "$@" \
        >"$TMP/insp.out" 2>"$TMP/insp.err") || code=$?
    verdict="$("$PY" "$HERE/inspector_check.py" "$kind" "$TMP/insp.out" "$TMP/insp.err" "$code")" || vcode=$?
    case "$vcode" in
        0) pass "$step" ;;
        3) if [[ -n "$STRICT" ]]; then fail "$step" "$verdict"; else skip "$step" "$verdict"; fi ;;
        *) if [[ "$code" == 124 ]]; then fail "$step" "timed out (its 60 s or the script's bound)"; else fail "$step" "$verdict"; fi ;;
    esac
}

if inspector_setup >"$TMP/inspector.reason"; then
    note "MCP Inspector $INSPECTOR_VERSION on node $("$NODE" --version)"
    INSPECTOR_KEY="$(bounded 60 "$PY" "$HERE/driver.py" --url "$URL" --data-dir "$DATA" --mint rc-inspector alice)" \
        || INSPECTOR_KEY=""
    ID=(--header "Authorization: Bearer $INSPECTOR_KEY")
    for era in legacy modern; do
        step="inspector/http-$([[ $era == legacy ]] && echo 2025 || echo 2026)"
        inspector_run "$step/tools-list" list "$URL/mcp" --transport http --protocol-era "$era" "${ID[@]}" \
            --method tools/list
        inspector_run "$step/echo" echo "$URL/mcp" --transport http --protocol-era "$era" "${ID[@]}" \
            --method tools/call --tool-name echo__ping --tool-arg message=hi
    done
    inspector_run inspector/sse/tools-list list "$URL/sse" --transport sse "${ID[@]}" --method tools/list
    inspector_run inspector/sse/echo echo "$URL/sse" --transport sse "${ID[@]}" \
        --method tools/call --tool-name echo__ping --tool-arg message=hi
    if [[ -x "$REPO/.venv/bin/northstar" ]]; then NS=("$REPO/.venv/bin/northstar"); else NS=("$PY" -m northstar); fi
    STDIO=(-- "${NS[@]}" stdio --tenant rc-inspector --user alice --data-dir "$DATA")
    inspector_run inspector/stdio/tools-list list --transport stdio --method tools/list "${STDIO[@]}"
    inspector_run inspector/stdio/echo echo --transport stdio \
        --method tools/call --tool-name echo__ping --tool-arg message=hi "${STDIO[@]}"
    # A denial must reach the client as an isError result it accepts (not a protocol error).
    inspector_run inspector/http-2025/denied denied "$URL/mcp" --transport http "${ID[@]}" \
        --method tools/call --tool-name media_v2__create_asset \
        --tool-arg name=a.txt mime_type=text/plain content_text=hi
else
    skip inspector "$(cat "$TMP/inspector.reason")"
fi

# -- 4. stop the gateway (SIGTERM must end it cleanly) and summarise ---------------------------
stop_gateway
summary
[[ "$(count FAIL)" == 0 ]]
