"""A shop's browser as the conversion tests play it: page views through the real collect (as tracker.js
sends them), form submissions, and the shop's tenant with a site and a form."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

ORIGIN = "https://shop.example"
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"

__all__ = ["BROWSER", "ORIGIN", "Browser"]


@dataclass
class Browser:
    """One browser on the shop's site: it keeps its visitor token and its first-party ad cookies."""

    client: Any
    site_key: str
    token: str | None = None
    cookies: dict[str, str] | None = None
    headers: dict[str, str] | None = None

    def view(self, path: str, **fields: Any) -> None:
        """A page view of ``path``: its UTMs and click ids read from the query, as the tracker reads them."""
        query = {k: v[0] for k, v in parse_qs(urlsplit(path).query).items()}
        hit = {
            "hit_id": str(uuid.uuid4()),
            "ts": int(time.time() * 1000),
            "url": f"{ORIGIN}{path}",
            "path": path.split("?", maxsplit=1)[0],
            "utm": {k[4:]: v for k, v in query.items() if k.startswith("utm_")},
            "click_ids": {
                k: v for k, v in query.items() if k in ("fbclid", "gclid", "gbraid", "wbraid", "ttclid", "msclkid")
            },
            "cookies": dict(self.cookies or {}),
            **fields,
        }
        body = json.dumps({"v": 1, "token": self.token, "hits": [hit]}).encode()
        headers = {"Origin": ORIGIN, "User-Agent": BROWSER, "Content-Type": "text/plain;charset=UTF-8"}
        answer = self.client.post(
            f"/collect/{self.site_key}", content=body, headers={**headers, **(self.headers or {})}
        )
        assert answer.status_code in (202, 204), answer.text
        if answer.status_code == 202 and answer.content:
            self.token = answer.json()["token"]

    def submit(self, form_key: str, values: dict[str, str]) -> Any:
        data = {"tm_started": str(int(time.time() * 1000) - 5000), **values}
        if self.token:
            data["tm_token"] = self.token
        headers = {"Origin": ORIGIN, "User-Agent": BROWSER, "Accept": "application/json", **(self.headers or {})}
        answer = self.client.post(f"/f/{form_key}", data=data, headers=headers)
        assert answer.status_code == 200, answer.text
        return answer
