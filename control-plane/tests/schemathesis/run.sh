#!/usr/bin/env bash
# Runs schemathesis (from PyPI, in a private virtualenv it creates on first
# use) against a running control plane's OpenAPI document.
#
#   control-plane/tests/schemathesis/run.sh BASE_URL TOKEN
#
# Checks: no 5xx for any input; every status, content type and header the
# server answers with is one the document lists; and a body generated to
# match the config schema is never refused for its shape (isame_checks.py).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
venv="${ISAME_TOOLS_DIR:-$root/target/tools}/schemathesis"
base="$1"
token="$2"

if [ ! -x "$venv/bin/st" ] || ! cmp -s "$here/requirements.txt" "$venv/requirements.txt"; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
    cp "$here/requirements.txt" "$venv/requirements.txt"
fi

# schemathesis and hypothesis keep caches in the working directory.
cd "$venv"
export PYTHONPATH="$here" SCHEMATHESIS_HOOKS=isame_checks
exec "$venv/bin/st" run "$base/api/v1/openapi.json" \
    --header "Authorization: Bearer $token" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,schema_valid_configs_are_not_refused_for_their_shape \
    --max-examples "${ISAME_SCHEMATHESIS_EXAMPLES:-40}" \
    --seed "${ISAME_SCHEMATHESIS_SEED:-7}" \
    --request-timeout 10 \
    --workers 1 \
    --no-color
