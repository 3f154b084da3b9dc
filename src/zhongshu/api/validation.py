"""Pydantic value types that keep bad input at the edge as a 422, before it can reach a
database that would refuse it with an error we would otherwise turn into a 5xx."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, JsonValue

from zhongshu.validation import no_nul, plain_json

SafeStr = Annotated[str, AfterValidator(no_nul)]
SafeJson = Annotated[JsonValue, AfterValidator(plain_json)]
