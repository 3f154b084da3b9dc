"""Turn domain errors and validation errors into clear 4xx replies at the HTTP edge."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from zhongshu import errors

log = logging.getLogger("zhongshu.api")


def _field(loc: tuple[object, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def install(app: FastAPI) -> None:
    @app.exception_handler(errors.ZhongshuError)
    async def _domain(_: Request, exc: errors.ZhongshuError) -> JSONResponse:
        headers = {}
        if isinstance(exc, errors.TooManyRequests):
            headers["Retry-After"] = str(max(1, int(exc.retry_after_s + 0.999)))
        if isinstance(exc, errors.AuthenticationFailed):
            headers["WWW-Authenticate"] = "Bearer"
        if isinstance(exc, errors.StoreError):
            log.error("store error: %s", exc.message)
        return JSONResponse({"detail": exc.message}, exc.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors():
            if err.get("type") == "json_invalid":
                problems.append(f"malformed JSON: {err.get('ctx', {}).get('error', err['msg'])}")
                continue
            problems.append(f"{_field(tuple(err['loc']))}: {err['msg']}")
        # Echo where and what, never the offending input (it may be huge, secret, or NaN).
        details = [
            {"loc": [str(p) for p in err["loc"]], "msg": err["msg"], "type": err["type"]}
            for err in exc.errors()
        ]
        return JSONResponse({"detail": "; ".join(problems), "errors": details}, status_code=422)
