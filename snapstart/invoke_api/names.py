"""The ``FunctionName`` path parameter, as Lambda accepts it.

``my-function``, ``my-function:v1`` (partial), ``123456789012:function:my-function``
(partial ARN) or ``arn:aws:lambda:us-west-2:123456789012:function:my-function[:QUAL]``.
A ``Qualifier`` query parameter must agree with a qualifier in the name. Names are
validated with Lambda's rules before anything becomes a path.
"""

from __future__ import annotations

import re

from ..config import validate_name
from ..errors import ConfigError, InvalidNameError

__all__ = ["parse_function_ref"]

_REF_RE = re.compile(
    r"^(?:arn:aws[a-zA-Z-]*:lambda:[a-z0-9-]+:\d{12}:function:|\d{12}:function:)?"
    r"(?P<name>[A-Za-z0-9_-]{1,64})(?::(?P<qual>\$LATEST|[A-Za-z0-9_-]{1,128}))?$")


def parse_function_ref(ref: str, qualifier: str | None = None) -> tuple[str, str | None]:
    if not isinstance(ref, str) or len(ref) > 256:
        raise InvalidNameError("invalid function name")
    m = _REF_RE.fullmatch(ref)     # `$` alone would accept a trailing newline
    if not m:
        raise InvalidNameError(
            f"1 validation error detected: Value '{ref[:140]}' at 'functionName' failed to "
            "satisfy constraint: Member must satisfy regular expression pattern: "
            "(arn:(aws[a-zA-Z-]*)?:lambda:)?([a-z]{2}(-gov)?-[a-z]+-\\d{1}:)?(\\d{12}:)?"
            "(function:)?([a-zA-Z0-9-_]+)(:(\\$LATEST|[a-zA-Z0-9-_]+))?")
    name, qual = validate_name(m.group("name")), m.group("qual")
    if qualifier:
        if not re.fullmatch(r"(\$LATEST|[A-Za-z0-9_-]{1,128})", qualifier):
            raise InvalidNameError(f"invalid qualifier {qualifier[:140]!r}")
        if qual and qual != qualifier:
            raise ConfigError("The derived qualifier from the function name does not match "
                              "the specified qualifier.")
        qual = qualifier
    return name, qual
