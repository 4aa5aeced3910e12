"""Checks of the Isame control plane that schemathesis runs beside its own
(loaded through SCHEMATHESIS_HOOKS by run.sh)."""

import schemathesis


@schemathesis.check
def schema_valid_configs_are_not_refused_for_their_shape(ctx, response, case):
    """A body generated to match the published config schema may be refused
    (422) only for rules the schema cannot state: a problem of kind `schema`
    means the schema promised something the reader does not accept."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return None
    # Only JSON bodies say exactly what was generated: YAML bodies are
    # written by a YAML 1.1 emitter, which leaves strings such as `1e100`
    # unquoted that YAML 1.2 (what Isame reads) types as numbers.
    if "yaml" in (case.media_type or ""):
        return None
    if response.status_code != 422:
        return None
    try:
        errors = response.json().get("errors", [])
    except ValueError:
        raise AssertionError("a 422 without a JSON body")
    shape = [e for e in errors if e.get("kind") == "schema"]
    if shape:
        listed = "\n".join(f"  {e.get('path')}: {e.get('message')}" for e in shape)
        raise AssertionError(
            "a document the published schema accepts was refused for its shape:\n" + listed
        )
    if any(e.get("kind") != "rule" for e in errors):
        raise AssertionError(f"a 422 problem without a kind: {errors}")
    return None
