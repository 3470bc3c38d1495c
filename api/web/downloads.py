"""File answers: a CSV the browser saves under its name, never cached (it holds the tenant's data)."""

from __future__ import annotations

from litestar.response import Response

__all__ = ["csv_download"]


def csv_download(body: str, filename: str) -> Response[str]:
    return Response(
        body,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store"},
    )
